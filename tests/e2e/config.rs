//! Config: every error names the file, line and key (data-driven cases in
//! tests/fixtures/config-errors), environment overrides and aliases, `gatehouse check` on the
//! shipped example, and refused reloads.

use std::path::{Path, PathBuf};

use gatehouse::App;
use gatehouse::config::{Balance, load_from};

use crate::support::{Gatehouse, Process, Upstream, app_upstream, client};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Each fixture's `# expect:` lines must all appear in the error of `gatehouse check`.
#[test]
fn config_errors_name_file_line_and_key() {
    let dir = repo().join("tests/fixtures/config-errors");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&case).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{name} has no # expect: line");
        let error = match load_from(Some(&case), Vec::new()) {
            Err(err) => err.to_string(),
            Ok(loaded) => match App::new(loaded).check() {
                Err(err) => err.to_string(),
                Ok(()) => panic!("{name}: expected an error, the config was accepted"),
            },
        };
        for want in expected {
            assert!(
                error.contains(want),
                "{name}: error does not contain {want:?}:\n{error}"
            );
        }
    }
}

#[test]
fn environment_overrides_the_file_and_accepts_reference_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(&file, "[edge]\nworkers = 3\n[pool]\npool_size = 5\n[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n").unwrap();
    let vars = [
        ("GATEHOUSE_EDGE__WORKERS", "7"),
        ("GATEHOUSE_UPSTREAMS__APP__BALANCE", "least_conn"),
        (
            "GATEHOUSE_EDGE__LISTEN",
            "[\"127.0.0.1:1\", \"127.0.0.1:2\"]",
        ),
        ("DB_POOL_SIZE", "10"),
        ("DB_MAX_OVERFLOW", "20"),
        ("DB_POOL_TIMEOUT", "60"),
        ("DB_POOL_RECYCLE", "300"),
        ("ENABLE_PERFORMANCE_MONITORING", "false"),
        ("HORIZONTAL_SCALING_ENABLED", "true"),
        ("UNRELATED", "x"),
    ];
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let config = load_from(Some(&file), vars).unwrap().config;
    assert_eq!(config.edge.workers, 7);
    assert_eq!(config.edge.listen.len(), 2);
    assert_eq!(config.upstreams["app"].balance, Balance::LeastConn);
    assert_eq!(config.pool.pool_size, 10, "DB_POOL_SIZE overrides the file");
    assert_eq!(config.pool.max_overflow, 20);
    assert_eq!(config.pool.pool_timeout.as_secs(), 60);
    assert_eq!(config.pool.recycle.as_secs(), 300);
    assert!(!config.monitoring.enabled);
    assert!(config.redis.enabled);

    let explicit = [("DB_POOL_SIZE", "10"), ("GATEHOUSE_POOL__POOL_SIZE", "4")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    assert_eq!(
        load_from(Some(&file), explicit)
            .unwrap()
            .config
            .pool
            .pool_size,
        4,
        "GATEHOUSE_ wins over an alias"
    );

    let bad = [("DB_POOL_SIZE", "0")].map(|(k, v)| (k.to_string(), v.to_string()));
    let err = load_from(Some(&file), bad).err().unwrap().to_string();
    assert_eq!(
        err,
        "environment variable DB_POOL_SIZE: pool.pool_size: must be at least 1"
    );
    let unknown = [("GATEHOUSE_EDGE__WROKERS", "2")].map(|(k, v)| (k.to_string(), v.to_string()));
    let err = load_from(Some(&file), unknown).err().unwrap().to_string();
    assert!(
        err.starts_with("environment variable GATEHOUSE_EDGE__WROKERS: edge.wrokers: unknown key"),
        "{err}"
    );
}

#[tokio::test]
async fn check_accepts_the_example_and_refuses_a_bad_file() {
    let root = repo();
    let mut ok = Process::spawn(&["check", "-c", "examples/gatehouse.toml"], &root, &[]);
    assert_eq!(ok.exit_code().await, Some(0), "{}", ok.stderr_text());
    let mut ok = Process::spawn(&["check", "-c", "examples/bench/edge.toml"], &root, &[]);
    assert_eq!(ok.exit_code().await, Some(0), "{}", ok.stderr_text());

    let mut bad = Process::spawn(
        &[
            "check",
            "-c",
            "tests/fixtures/config-errors/unknown-upstream.toml",
        ],
        &root,
        &[],
    );
    assert_eq!(bad.exit_code().await, Some(2));
    let message = bad.stderr_text();
    assert!(
        message.contains("unknown-upstream.toml:9: routes.1.upstream"),
        "{message}"
    );
}

#[tokio::test]
async fn version_prints_the_version() {
    let mut version = Process::spawn(&["version"], &repo(), &[]);
    assert_eq!(version.exit_code().await, Some(0));
    let printed = version.stdout.lock().unwrap().join("\n");
    assert_eq!(printed, format!("gatehouse {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn a_refused_reload_keeps_the_running_config() {
    let first = Upstream::start("first").await;
    let second = Upstream::start("second").await;
    let gatehouse = Gatehouse::start(&app_upstream(first.addr, ""));
    let who = || async {
        client(None)
            .get(gatehouse.url("/who"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(who().await, "first GET /who");

    let err = gatehouse
        .reload_with("[upstreams.app]\nservers = [\"no-port\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gatehouse.toml:") && err.contains("upstreams.app.servers.0"),
        "{err}"
    );
    assert_eq!(who().await, "first GET /who");

    gatehouse
        .reload_with(&app_upstream(second.addr, ""))
        .unwrap();
    assert_eq!(who().await, "second GET /who");
}

/// `GET /api/v1/config` lists each value in force with where it came from, secrets hidden;
/// `POST /api/v1/config/reload` reloads the file, or answers 422 naming its line.
#[tokio::test]
async fn the_admin_api_shows_values_with_their_sources_and_reloads() {
    let first = Upstream::start("first").await;
    let second = Upstream::start("second").await;
    let gatehouse = Gatehouse::start(&format!(
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:1/0\"\n\n{}",
        app_upstream(first.addr, "")
    ));
    let settings = gatehouse.admin_json("/api/v1/config").await["settings"].clone();
    let servers = &settings["upstreams.app.servers"];
    assert_eq!(
        servers["value"],
        serde_json::json!([first.addr.to_string()])
    );
    let source = servers["source"].as_str().unwrap();
    assert!(source.ends_with("gatehouse.toml:5"), "{source}");
    assert_eq!(settings["edge.keep_alive"]["source"], "default");
    assert_eq!(settings["redis.url"]["value"], "redis://***@127.0.0.1:1/0");
    assert!(!settings.to_string().contains("hunter2"));

    let reload = || async {
        gatehouse
            .admin(reqwest::Method::POST, "/api/v1/config/reload")
            .send()
            .await
            .unwrap()
    };
    std::fs::write(
        &gatehouse.config_path,
        "[upstreams.app]\nservers = [\"no-port\"]\n",
    )
    .unwrap();
    let refused = reload().await;
    assert_eq!(refused.status(), 422);
    let why = refused.json::<serde_json::Value>().await.unwrap()["error"].to_string();
    assert!(
        why.contains("gatehouse.toml:2") && why.contains("upstreams.app.servers.0"),
        "{why}"
    );

    gatehouse
        .reload_with(&app_upstream(second.addr, ""))
        .unwrap();
    assert_eq!(reload().await.status(), 200, "the file as it is now loads");
    let settings = gatehouse.admin_json("/api/v1/config").await["settings"].clone();
    assert_eq!(
        settings["upstreams.app.servers"]["value"],
        serde_json::json!([second.addr.to_string()])
    );
}
