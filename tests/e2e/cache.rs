//! The response cache through the real edge, with the built-in cache rules and the example
//! logged-in-bypass plugin, in front of an upstream that counts its hits.

use std::path::Path;

use crate::support::{Gatehouse, Upstream, client};

/// A site whose every route is cached by `plugin` in front of `upstream`.
pub fn cached_site(upstream: &Upstream, plugin: &str) -> String {
    format!(
        r#"
[plugins.pages]
kind = "cache-rules"
source = "{plugin}"

[[routes]]
path = "/"
upstream = "app"
cache = "pages"

[upstreams.app]
servers = ["{}"]
"#,
        upstream.addr
    )
}

/// What the cache did, as the response says.
pub fn x_cache(response: &reqwest::Response) -> &str {
    response.headers()["x-cache"].to_str().unwrap()
}

#[tokio::test]
async fn a_stored_response_answers_again_without_the_upstream() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let get = |path: &str| {
        http.get(gatehouse.url(path))
            .header("accept-encoding", "gzip")
    };

    let first = get("/cached/page?a=1").send().await.unwrap();
    assert_eq!((first.status().as_u16(), x_cache(&first)), (200, "MISS"));
    let body = first.text().await.unwrap();
    assert_eq!(
        body, "app GET /cached/page?a=1 identity",
        "a fill asks for identity"
    );
    let second = get("/cached/page?a=1").send().await.unwrap();
    assert_eq!((second.status().as_u16(), x_cache(&second)), (200, "HIT"));
    let age: u64 = second.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age <= 1, "age {age}");
    assert_eq!(second.headers()["etag"], "\"v1\"");
    assert_eq!(second.text().await.unwrap(), body);
    assert_eq!(upstream.hits(), 1);

    let head = http
        .head(gatehouse.url("/cached/page?a=1"))
        .send()
        .await
        .unwrap();
    assert_eq!((head.status().as_u16(), x_cache(&head)), (200, "HIT"));
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
    let revalidated = get("/cached/page?a=1")
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (revalidated.status().as_u16(), x_cache(&revalidated)),
        (304, "HIT")
    );
    assert_eq!(revalidated.headers()["etag"], "\"v1\"");
    assert_eq!(
        upstream.hits(),
        1,
        "HEAD and revalidation came from the entry"
    );

    let other = get("/cached/page?a=2").send().await.unwrap();
    assert_eq!(x_cache(&other), "MISS", "another query is another entry");
    let authorized = get("/cached/page?a=1")
        .header("authorization", "Bearer t")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&authorized), "BYPASS");
    let post = http
        .post(gatehouse.url("/cached/page?a=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&post), "BYPASS");
    assert_eq!(upstream.hits(), 4);

    for _ in 0..2 {
        let personal = get("/cached/c?cookie").send().await.unwrap();
        assert_eq!(
            x_cache(&personal),
            "MISS",
            "a Set-Cookie response is never stored"
        );
    }
    assert_eq!(upstream.hits(), 6);
}

#[tokio::test]
async fn an_entry_answers_only_requests_with_its_varying_header_values() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let in_language = |lang: &'static str| {
        http.get(gatehouse.url("/cached/v?vary=accept-language"))
            .header("accept-language", lang)
            .send()
    };
    assert_eq!(x_cache(&in_language("fr").await.unwrap()), "MISS");
    assert_eq!(x_cache(&in_language("fr").await.unwrap()), "HIT");
    assert_eq!(x_cache(&in_language("de").await.unwrap()), "MISS");
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let requests = (0..100).map(|_| {
        let request = http.get(gatehouse.url("/cached/slow?ms=300")).send();
        async move {
            let response = request.await.unwrap();
            let status = (response.status().as_u16(), x_cache(&response).to_string());
            (status, response.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert_eq!(upstream.hits(), 1, "the misses waited for the first");
    let misses = answers
        .iter()
        .filter(|((_, cache), _)| cache == "MISS")
        .count();
    assert_eq!(misses, 1);
    for ((status, _), body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body, "app GET /cached/slow?ms=300 identity");
    }
}

#[tokio::test]
async fn the_example_plugin_bypasses_logged_in_visitors_and_ignores_tracking_parameters() {
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plugins/dist/logged-in-bypass.wasm");
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, &plugin.display().to_string()));
    let http = client(None);
    let first = http
        .get(gatehouse.url("/cached/p?b=2&a=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&first), "MISS");
    let tracked = http
        .get(gatehouse.url("/cached/p?a=1&utm_source=news&b=2&fbclid=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        x_cache(&tracked),
        "HIT",
        "the same page under tracking parameters"
    );
    assert_eq!(
        tracked.text().await.unwrap(),
        "app GET /cached/p?b=2&a=1 identity"
    );
    let logged_in = http
        .get(gatehouse.url("/cached/p?b=2&a=1"))
        .header("cookie", "theme=dark; sessionid=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&logged_in), "BYPASS");
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn malformed_range_cache_control_and_accept_encoding_are_ignored_as_the_rfcs_allow() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let url = gatehouse.url("/cached/m?pad=4000");
    let body = http.get(&url).send().await.unwrap().text().await.unwrap();
    // Long, but within edge.max_header_bytes (16 KiB): ignored. Past it, 431 (below).
    let many_ranges = (0..1000)
        .map(|i| format!("{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let many_codings = (0..500)
        .map(|i| format!("x-coding-{i};q=0.{}", i % 10))
        .collect::<Vec<_>>()
        .join(", ");
    let hostile = [
        ("range", "bytes=abc-def".to_string()),
        ("range", format!("bytes={many_ranges}")),
        ("range", "lines=1-2".to_string()),
        (
            "cache-control",
            "max-age=abc, ,,, no-transform=\"".to_string(),
        ),
        ("accept-encoding", "gzip;q=abc, ;;;, *;q=-1".to_string()),
        ("accept-encoding", many_codings),
    ];
    for (name, value) in hostile {
        let response = http
            .get(&url)
            .header(name, value.as_str())
            .send()
            .await
            .unwrap();
        let what = format!("{name}: {}", &value[..value.len().min(40)]);
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(x_cache(&response), "HIT", "{what}");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{what}: no coding the client accepts was offered"
        );
        assert_eq!(response.text().await.unwrap(), body, "{what}");
    }
    let huge = (0..3000)
        .map(|i| format!("{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let refused = http
        .get(&url)
        .header("range", format!("bytes={huge}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 431, "a clear 4xx past the header limit");
    assert_eq!(upstream.hits(), 1);
}
