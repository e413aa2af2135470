//! Client addresses through the real edge: `X-Forwarded-For` believed only from trusted
//! proxies, and routes' allow and deny lists.

use crate::support::{Gatehouse, Upstream, app_upstream, client};

fn site(upstream: &Upstream, trusted: &str) -> String {
    format!(
        r#"
[edge]
trusted_proxies = [{trusted}]

[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/internal/"
upstream = "app"
allow_ips = ["10.0.0.0/8", "::1"]

[[routes]]
path = "/public/"
upstream = "app"
deny_ips = ["203.0.113.0/24"]

{}"#,
        app_upstream(upstream.addr, "")
    )
}

#[tokio::test]
async fn routes_admit_clients_by_address_and_believe_only_trusted_proxies() {
    let upstream = Upstream::start("app").await;
    let behind_proxy = Gatehouse::start(&site(&upstream, "\"127.0.0.1\""));
    let direct = Gatehouse::start(&site(&upstream, ""));
    let http = client(None);
    let status = |gatehouse: &Gatehouse, path: &str, forwarded: Option<&str>| {
        let mut request = http.get(gatehouse.url(path));
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(&behind_proxy, "/internal/x", Some("10.1.2.3")).await,
        200
    );
    assert_eq!(status(&behind_proxy, "/internal/x", None).await, 403);
    assert_eq!(
        status(&behind_proxy, "/public/x", Some("203.0.113.7")).await,
        403
    );
    assert_eq!(
        status(
            &behind_proxy,
            "/public/x",
            Some("203.0.113.7, 198.51.100.2")
        )
        .await,
        200,
        "the client is the last untrusted hop, not what it claims further left"
    );
    assert_eq!(
        status(&direct, "/internal/x", Some("10.1.2.3")).await,
        403,
        "without trusted proxies the header is not believed"
    );
    assert_eq!(status(&direct, "/public/x", Some("203.0.113.7")).await, 200);
    let refused = http.get(direct.url("/internal/x")).send().await.unwrap();
    assert!(refused.text().await.unwrap().starts_with("403 Forbidden"));
}
