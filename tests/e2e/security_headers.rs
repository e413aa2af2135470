//! Security headers and CORS through the real edge: the secure defaults, what the upstream may
//! not advertise, a route where the upstream's own headers win, and CORS preflights answered
//! without the upstream.

use reqwest::Method;

use crate::support::{Gatehouse, Upstream, app_upstream, client};

fn site(upstream: &Upstream) -> String {
    format!(
        r#"
[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/typed/own/"
upstream = "app"
security_headers = {{ upstream_wins = true, content_security_policy = "" }}

[[routes]]
path = "/typed/api/"
upstream = "app"
cors = {{ origins = ["https://app.example.com", "https://*.example.org"], methods = ["GET", "POST", "DELETE"], headers = ["Content-Type", "X-Token"], expose_headers = ["X-Request-Id"], credentials = true, max_age = "1h" }}

[[routes]]
path = "/typed/public/"
upstream = "app"
cors = {{ origins = ["*"] }}

{}"#,
        app_upstream(upstream.addr, "")
    )
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn secure_defaults_are_sent_and_the_upstream_stack_is_not_advertised() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&site(&upstream));
    let http = client(None);
    let plain = http
        .get(gatehouse.url("/typed/page?stack=1"))
        .send()
        .await
        .unwrap();
    for (name, value) in gatehouse::edge::security_headers::DEFAULTS {
        assert_eq!(header(&plain, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(
        header(&plain, "strict-transport-security"),
        None,
        "HSTS only over TLS by default"
    );
    assert_eq!(header(&plain, "server"), None);
    assert_eq!(header(&plain, "x-powered-by"), None);

    let own = http
        .get(gatehouse.url("/typed/own/page?stack=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&own, "x-frame-options").as_deref(),
        Some("SAMEORIGIN"),
        "the route lets the upstream's own header win"
    );
    assert_eq!(header(&own, "content-security-policy"), None, "removed");
    assert_eq!(
        header(&own, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_here_and_actual_requests_marked() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&site(&upstream));
    let http = client(None);
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        http.request(Method::OPTIONS, gatehouse.url("/typed/api/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let allowed = preflight("https://app.example.com", "DELETE", "x-token, content-type")
        .await
        .unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-methods").as_deref(),
        Some("GET, POST, DELETE")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-headers").as_deref(),
        Some("Content-Type, X-Token")
    );
    assert_eq!(
        header(&allowed, "access-control-max-age").as_deref(),
        Some("3600")
    );
    assert!(header(&allowed, "vary").unwrap().contains("Origin"));
    let subdomain = preflight("https://shop.eu.example.org", "GET", "")
        .await
        .unwrap();
    assert_eq!(subdomain.status(), 204);
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://example.org", "GET", ""),
        ("https://app.example.com", "PATCH", ""),
        ("https://app.example.com", "GET", "x-other"),
    ] {
        let refused = preflight(origin, method, headers).await.unwrap();
        assert_eq!(refused.status(), 403, "{origin} {method} {headers}");
        assert_eq!(header(&refused, "access-control-allow-origin"), None);
    }
    assert_eq!(upstream.hits(), 0, "no preflight reached the upstream");

    let actual = http
        .get(gatehouse.url("/typed/api/items"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&actual, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&actual, "access-control-expose-headers").as_deref(),
        Some("X-Request-Id")
    );
    let foreign = http
        .get(gatehouse.url("/typed/api/items"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status(),
        200,
        "the browser, not the server, enforces CORS"
    );
    assert_eq!(header(&foreign, "access-control-allow-origin"), None);
    assert!(header(&foreign, "vary").unwrap().contains("Origin"));
    let public = http
        .get(gatehouse.url("/typed/public/x"))
        .header("origin", "https://anyone.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&public, "access-control-allow-origin").as_deref(),
        Some("*")
    );
}
