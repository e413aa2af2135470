//! The plugin author's path, with the real binary and the real toolchain: `gatehouse policy new`,
//! `cargo test` on the scaffold, `gatehouse policy build`, `gatehouse policy test`, and the
//! config `build` prints loading into a running gatehouse.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{Gatehouse, Upstream, client};

/// Runs the binary (or `cargo` when `program` says so) with the scaffold builds kept between runs
/// and no network: the SDK's one dependency is already in the registry cache from the built-ins.
fn run(program: &str, args: &[&str], cwd: &Path) -> Output {
    let program = match program {
        "gatehouse" => env!("CARGO_BIN_EXE_gatehouse"),
        other => other,
    };
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("policy-tool");
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_new_plugin_tests_builds_runs_in_the_host_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let created = run(
        "gatehouse",
        &["policy", "new", "rate-limit", "tiered"],
        dir.path(),
    );
    assert_ok(&created, "policy new");
    let crate_dir = dir.path().join("tiered");

    assert_ok(&run("cargo", &["test"], &crate_dir), "cargo test");

    let built = run("gatehouse", &["policy", "build"], &crate_dir);
    assert_ok(&built, "policy build");
    let report = stdout(&built);
    assert!(report.contains("kind     rate-limit"), "{report}");
    let wasm = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("policy-tool/wasm32-wasip2/release/tiered.wasm");

    let tested = run(
        "gatehouse",
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            "--fixture",
            "fixtures/example.json",
        ],
        &crate_dir,
    );
    assert_ok(&tested, "policy test");
    assert!(stdout(&tested).contains("2 calls, 0 failed"));

    // A wrong expectation fails the command and shows both sides.
    let wrong = crate_dir.join("fixtures/wrong.json");
    std::fs::write(
        &wrong,
        r#"{ "calls": [ { "request": {}, "expect": { "Limit": { "key": "ip:10.9.9.9" } } } ] }"#,
    )
    .unwrap();
    let failed = run(
        "gatehouse",
        &[
            "policy",
            "test",
            wasm.to_str().unwrap(),
            "--fixture",
            wrong.to_str().unwrap(),
        ],
        &crate_dir,
    );
    assert_eq!(failed.status.code(), Some(1));
    let report = stdout(&failed);
    assert!(report.starts_with("FAIL GET /"), "{report}");
    assert!(report.contains("\"key\":\"ip:127.0.0.1\""), "{report}");
    assert!(
        report.contains("expected {\"Limit\":{\"key\":\"ip:10.9.9.9\"}}"),
        "{report}"
    );

    // The config block `build` printed loads the plugin into a running gatehouse.
    let plugin_block = stdout(&built)
        .split_once("in gatehouse.toml:")
        .expect("build prints a config block")
        .1
        .to_string();
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"{plugin_block}
[[routes]]
path = "/"
upstream = "app"
rate_limit = "tiered"

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    ));
    let response = client(None).get(gatehouse.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["ratelimit-policy"],
        "\"tiered\";q=100;w=60"
    );
}

#[test]
fn policy_new_refuses_bad_names_and_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let bad = run(
        "gatehouse",
        &["policy", "new", "rate-limit", "Bad Name"],
        dir.path(),
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use lowercase letters"));

    let bad_kind = run("gatehouse", &["policy", "new", "caching", "x"], dir.path());
    assert!(
        String::from_utf8_lossy(&bad_kind.stderr)
            .contains("expected rate-limit, cache-rules or recommendations")
    );

    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let taken = run(
        "gatehouse",
        &["policy", "new", "cache-rules", "taken"],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
}
