//! Policy plugins through the real edge: the built-in rate limit, failing plugins and their
//! fallbacks, load-time refusals, hot swap.

use crate::support::{Gatehouse, Upstream, client};

/// Every path of `upstream` behind the built-in rate limit; `plugin_extra` adds keys to the
/// plugin's table (its `config`, say).
pub(crate) fn limited(upstream: &Upstream, plugin_extra: &str) -> String {
    format!(
        r#"
[plugins.limits]
kind = "rate-limit"
source = "builtin:rate-limit"
{plugin_extra}

[[routes]]
path = "/"
upstream = "app"
rate_limit = "limits"

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    )
}

#[tokio::test]
async fn the_builtin_rate_limit_answers_429_with_the_ratelimit_fields() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&limited(
        &upstream,
        "config = { default = { limit = 3, window = 60 } }",
    ));
    let http = client(None);
    for remaining in [2, 1, 0] {
        let response = http.get(gatehouse.url("/who")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"default\";q=3;w=60"
        );
        let state = response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            state.starts_with(&format!("\"default\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = http.get(gatehouse.url("/who")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["retry-after"],
        "20",
        "one request comes back every 20 s"
    );
    assert_eq!(refused.headers()["ratelimit"], "\"default\";r=0;t=60");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .starts_with("429 Too Many Requests")
    );
    assert_eq!(
        upstream.hits(),
        3,
        "refused requests never reach the upstream"
    );

    let other_key = http
        .get(gatehouse.url("/who"))
        .header("x-api-key", "team-b")
        .send()
        .await
        .unwrap();
    assert_eq!(other_key.status(), 200, "an API key has its own quota");
}

#[tokio::test]
async fn allowed_responses_can_go_without_the_ratelimit_fields() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[rate_limits]\nheaders_on_allowed = false\n{}",
        limited(
            &upstream,
            "config = { default = { limit = 1, window = 60 } }"
        )
    ));
    let http = client(None);
    let allowed = http.get(gatehouse.url("/who")).send().await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert!(allowed.headers().get("ratelimit").is_none());
    assert!(allowed.headers().get("ratelimit-policy").is_none());
    let refused = http.get(gatehouse.url("/who")).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["ratelimit"], "\"default\";r=0;t=60");
}

/// The failure cases in tests/fixtures/policies/cases: one folder per case with its plugin, its
/// config and the expected outcome (a load error, or each request's status and how soon).
#[tokio::test]
async fn failure_cases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/policies");
    let mut cases: Vec<_> = std::fs::read_dir(root.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8);
    let upstream = Upstream::start("a").await;
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let spec: toml_edit::DocumentMut = std::fs::read_to_string(case.join("case.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let mut plugin = spec["plugin"].as_table().unwrap().clone();
        // A fixture plugin by name, or a file of the case's own.
        let source = plugin["source"].as_str().unwrap().to_string();
        let path = match source.as_str() {
            "misbehaving" | "wrong-wit" => root.join(format!("{source}.wasm")),
            file => case.join(file),
        };
        plugin["source"] = toml_edit::value(path.display().to_string());
        let kind = plugin
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("rate-limit")
            .to_string();
        plugin["kind"] = toml_edit::value(&kind);
        let binding = if kind == "rate-limit" {
            "rate_limit = \"case\""
        } else {
            ""
        };
        let config = format!(
            "[plugins.case]\n{plugin}\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n{binding}\n\n[upstreams.app]\nservers = [\"{}\"]\n",
            upstream.addr
        );

        let started = Gatehouse::try_start(&config);
        if let Some(expected) = spec
            .get("expect")
            .and_then(|e| e.get("load_error"))
            .and_then(|e| e.as_str())
        {
            let error = started
                .err()
                .unwrap_or_else(|| panic!("{name}: expected a load error"))
                .to_string();
            assert!(
                error.contains(expected),
                "{name}: error does not contain {expected:?}:\n{error}"
            );
            continue;
        }
        let gatehouse = started.unwrap_or_else(|err| panic!("{name}: did not start: {err}"));
        let http = client(None);
        for request in spec["requests"].as_array_of_tables().unwrap() {
            let path = request["path"].as_str().unwrap();
            let status = request["status"].as_integer().unwrap() as u16;
            let within = request
                .get("within")
                .and_then(|w| w.as_str())
                .map_or(std::time::Duration::from_secs(5), |w| {
                    humantime::parse_duration(w).unwrap()
                });
            let began = std::time::Instant::now();
            let response = http.get(gatehouse.url(path)).send().await.unwrap();
            assert_eq!(response.status(), status, "{name}: GET {path}");
            assert!(
                began.elapsed() < within,
                "{name}: GET {path} took {:?} (limit {within:?})",
                began.elapsed()
            );
        }
    }
}

/// A plugin file rewritten by a new build goes live within a poll, with requests flowing all the
/// while; a broken file is refused and the running version keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_build_swaps_in_under_load_without_a_failed_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let default_build = root.join("policies/dist/rate-limit.wasm");
    let tiered_build = root.join("examples/plugins/dist/tiered-quotas.wasm");
    let upstream = Upstream::start("a").await;
    let plugins = tempfile::tempdir().unwrap();
    let plugin = plugins.path().join("limits.wasm");
    std::fs::copy(&default_build, &plugin).unwrap();
    let gatehouse = Arc::new(Gatehouse::start(&format!(
        "[plugins.limits]\nkind = \"rate-limit\"\nsource = \"{}\"\n\n[[routes]]\npath = \"/\"\nupstream = \"app\"\nrate_limit = \"limits\"\n\n[upstreams.app]\nservers = [\"{}\"]\n",
        plugin.display(),
        upstream.addr
    )));

    // Every request has a key of its own (`ent_` is the tiered plugin's top tier), so no quota
    // runs out: anything but 200 is a failure of the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|task| {
            let (gatehouse, stop) = (Arc::clone(&gatehouse), Arc::clone(&stop));
            tokio::spawn(async move {
                let http = client(None);
                let (mut sent, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("ent_{task}_{sent}");
                    match http
                        .get(gatehouse.url("/"))
                        .header("x-api-key", key)
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(response.status().to_string()),
                        Err(err) => failures.push(err.to_string()),
                    }
                    sent += 1;
                }
                (sent, failures)
            })
        })
        .collect();

    let policy_in_use = || async {
        let response = client(None)
            .get(gatehouse.url("/"))
            .header("x-api-key", "ent_probe")
            .send()
            .await
            .unwrap();
        let policy = response.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .to_string();
        policy
            .split(';')
            .next()
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    let becomes = |name: &'static str| async move {
        crate::support::eventually(std::time::Duration::from_secs(10), name, || async {
            policy_in_use().await == name
        })
        .await
    };
    assert_eq!(policy_in_use().await, "default");
    std::fs::copy(&tiered_build, &plugin).unwrap();
    becomes("enterprise").await;

    std::fs::write(&plugin, b"\0asm but not really").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        policy_in_use().await,
        "enterprise",
        "a broken build is refused"
    );

    std::fs::copy(&default_build, &plugin).unwrap();
    becomes("default").await;

    // The operator rolls back to the build before, under the same load.
    let listed = gatehouse.admin_json("/api/v1/plugins").await;
    assert_eq!(listed[0]["name"], "limits", "{listed}");
    assert!(listed[0]["rollback_to"].is_string(), "{listed}");
    assert!(listed[0]["calls"].as_u64().unwrap() > 0, "{listed}");
    // A power of two of microseconds: the bucket the 99th percentile call falls in.
    let p99 = listed[0]["p99_call_us"].as_u64().unwrap();
    assert!(p99.is_power_of_two(), "{listed}");
    let rollback = |name: &str| {
        gatehouse
            .admin(
                reqwest::Method::POST,
                &format!("/api/v1/plugins/{name}/rollback"),
            )
            .send()
    };
    assert_eq!(rollback("limits").await.unwrap().status(), 200);
    assert_eq!(policy_in_use().await, "enterprise", "rolled back at once");
    assert_eq!(
        rollback("limits").await.unwrap().status(),
        409,
        "one version back only"
    );
    assert_eq!(rollback("nope").await.unwrap().status(), 404);

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        let (sent, failures) = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during the swaps: {failures:?}"
        );
        total += sent;
    }
    assert!(
        total > 100,
        "only {total} requests were sent during the swaps"
    );
}

#[tokio::test]
async fn the_auth_limits_example_is_stricter_on_auth_endpoints() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let upstream = Upstream::start("app").await;
    let example = std::fs::read_to_string(root.join("examples/auth-limits.toml"))
        .unwrap()
        .replace("listen = [\"127.0.0.1:8080\"]", "")
        .replace("127.0.0.1:3000", &upstream.addr.to_string());
    let gatehouse = Gatehouse::start(&example);
    let http = client(None);
    let statuses = |path: &'static str| {
        let (http, url) = (&http, gatehouse.url(path));
        async move {
            let mut statuses = Vec::new();
            for _ in 0..8 {
                statuses.push(http.get(&url).send().await.unwrap().status().as_u16());
            }
            statuses
        }
    };
    let auth = statuses("/api/v5/auth/csrf").await;
    assert_eq!(auth[0], 200);
    assert!(auth.contains(&429), "the auth quota runs out: {auth:?}");
    let api = statuses("/api/items").await;
    assert!(
        api.iter().all(|s| *s == 200),
        "the API quota does not: {api:?}"
    );
}
