//! The example plugins of examples/plugins: each passes its fixtures in the real host, and the
//! tiered quotas decide through the real edge.

use std::path::{Path, PathBuf};

use crate::support::{Gatehouse, Upstream, client};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugins")
}

fn built(name: &str) -> PathBuf {
    examples().join("dist").join(format!("{name}.wasm"))
}

#[test]
fn every_example_passes_its_fixtures_in_the_real_host() {
    let mut fixtures = 0;
    for crate_dir in std::fs::read_dir(examples()).unwrap() {
        let crate_dir = crate_dir.unwrap().path();
        if !crate_dir.join("Cargo.toml").exists() {
            continue;
        }
        let name = crate_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for fixture in std::fs::read_dir(crate_dir.join("fixtures")).unwrap() {
            let fixture = fixture.unwrap().path();
            let outcomes = gatehouse::policy::tool::test(&built(&name), &fixture)
                .unwrap_or_else(|err| panic!("{}: {err}", fixture.display()));
            assert!(!outcomes.is_empty(), "{}: no calls", fixture.display());
            for outcome in outcomes {
                assert!(
                    outcome.expected.is_some(),
                    "{}: {} expects nothing",
                    fixture.display(),
                    outcome.input
                );
                assert!(
                    outcome.passed(),
                    "{}: {} gave {:?}, expected {:?}",
                    fixture.display(),
                    outcome.input,
                    outcome.result,
                    outcome.expected
                );
            }
            fixtures += 1;
        }
    }
    assert!(fixtures >= 3, "only {fixtures} example fixtures found");
}

#[tokio::test]
async fn tiered_quotas_pick_the_quota_by_key_prefix_through_the_edge() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        r#"
[plugins.tiers]
kind = "rate-limit"
source = "{}"
config = {{ require_key = true, cost = {{ POST = 2 }}, tiers = [
  {{ name = "pro", prefix = "pro_", limit = 2, window = 60 }},
  {{ name = "free", prefix = "free_", limit = 1, window = 60 }},
] }}

[[routes]]
path = "/"
upstream = "app"
rate_limit = "tiers"

[upstreams.app]
servers = ["{}"]
"#,
        built("tiered-quotas").display(),
        upstream.addr
    ));
    let http = client(None);
    let send = |method: reqwest::Method, key: Option<&str>| {
        let mut request = http.request(method, gatehouse.url("/orders"));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send()
    };

    let pro = send(reqwest::Method::GET, Some("pro_acme")).await.unwrap();
    assert_eq!(pro.status(), 200);
    assert_eq!(pro.headers()["ratelimit-policy"], "\"pro\";q=2;w=60");
    let costly = send(reqwest::Method::POST, Some("pro_acme")).await.unwrap();
    assert_eq!(costly.status(), 429, "a POST costs 2 and only 1 is left");
    let free = send(reqwest::Method::GET, Some("free_bob")).await.unwrap();
    assert_eq!(free.status(), 200, "each key has its own quota");
    assert_eq!(free.headers()["ratelimit-policy"], "\"free\";q=1;w=60");

    let no_plan = send(reqwest::Method::GET, Some("ent_carol")).await.unwrap();
    assert_eq!(no_plan.status(), 403);
    assert_eq!(
        no_plan.text().await.unwrap(),
        "this API key belongs to no plan\n"
    );
    let anonymous = send(reqwest::Method::GET, None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.unwrap().contains("x-api-key"));
    assert_eq!(upstream.hits(), 2, "refusals never reach the upstream");
}
