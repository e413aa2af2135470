//! Policy plugins through the real edge: the built-in rate limit, failing plugins and their
//! fallbacks, load-time refusals, hot swap.

use crate::support::{Gatehouse, Upstream, client};

fn limited(upstream: &Upstream, plugin_extra: &str) -> String {
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
