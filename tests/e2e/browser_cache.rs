//! Browser caching through the real edge: `Cache-Control` by content type (the defaults of the
//! reference deployment), by path pattern on a route of its own, the upstream's own header
//! winning, and a route that opts out.

use crate::support::{Gatehouse, Upstream, app_upstream, client};

#[tokio::test]
async fn cache_control_by_type_and_path_unless_the_upstream_or_the_route_says_otherwise() {
    let upstream = Upstream::start("app").await;
    let config = format!(
        r#"
[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/typed/live/"
upstream = "app"
browser_cache = {{ enabled = false }}

[[routes]]
path = "/typed/assets/"
upstream = "app"
browser_cache = {{ override_upstream = true, rules = [
  {{ paths = ["*.map"], cache_control = "private, max-age=60" }},
  {{ types = ["text/"], paths = ["/typed/assets/v2/*"], cache_control = "public, max-age=86400" }},
] }}

{}"#,
        app_upstream(upstream.addr, "")
    );
    let gatehouse = Gatehouse::start(&config);
    let http = client(None);
    let cache_control = |path: &str| {
        let request = http.get(gatehouse.url(path)).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200);
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    let year = Some("public, max-age=31536000, immutable".to_string());
    assert_eq!(
        cache_control("/typed/index?type=text/html;%20charset=utf-8")
            .await
            .as_deref(),
        Some("public, max-age=300")
    );
    assert_eq!(cache_control("/typed/app.css?type=text/css").await, year);
    assert_eq!(
        cache_control("/typed/app.js?type=application/javascript").await,
        year
    );
    assert_eq!(cache_control("/typed/f.woff2?type=font/woff2").await, year);
    assert_eq!(
        cache_control("/typed/logo.png?type=image/png")
            .await
            .as_deref(),
        Some("public, max-age=15552000, immutable")
    );
    assert_eq!(
        cache_control("/typed/data?type=application/json").await,
        None,
        "API answers are left alone"
    );
    assert_eq!(
        cache_control("/typed/own.css?type=text/css&own=1")
            .await
            .as_deref(),
        Some("no-cache"),
        "the upstream's own header wins"
    );
    assert_eq!(cache_control("/typed/live/page?type=text/html").await, None);
    assert_eq!(
        cache_control("/typed/assets/app.js.map?type=application/json&own=1")
            .await
            .as_deref(),
        Some("private, max-age=60"),
        "the route's rules win over the upstream there"
    );
    assert_eq!(
        cache_control("/typed/assets/v2/site.css?type=text/css")
            .await
            .as_deref(),
        Some("public, max-age=86400")
    );
    assert_eq!(
        cache_control("/typed/assets/v1/site.css?type=text/css").await,
        None,
        "the route's rules replace the defaults"
    );
}
