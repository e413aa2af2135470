//! Stale entries through the real edge: stale-while-revalidate, revalidation with a 304, and
//! stale-if-error with the upstream stopped. Entries here live one second (`max_age=1`); the
//! tests wait that second out.

use std::time::Duration;

use crate::cache::{cached_site, x_cache};
use crate::support::{Gatehouse, Upstream, client, eventually, text_of};

/// Past a one-second freshness lifetime.
const EXPIRED: Duration = Duration::from_millis(1_300);

#[tokio::test]
async fn a_stale_entry_answers_at_once_while_one_background_request_refreshes_it() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let url = gatehouse.url("/cached/s?max_age=1&swr=60");
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(x_cache(&first), "MISS");
    let body = first.text().await.unwrap();
    tokio::time::sleep(EXPIRED).await;

    let stale = futures_util::future::join_all((0..5).map(|_| async {
        let response = http.get(&url).send().await.unwrap();
        let cache = x_cache(&response).to_string();
        let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
        (cache, age, response.text().await.unwrap())
    }))
    .await;
    // The refresh may land while the five are in flight: later ones may then be fresh hits.
    for (cache, age, text) in &stale {
        assert_eq!(text, &body);
        assert!(cache == "STALE" || cache == "HIT", "{cache}");
        if cache == "STALE" {
            assert!(*age >= 1, "a stale answer says how old it is: {age}");
        }
    }
    assert!(stale.iter().any(|(cache, _, _)| cache == "STALE"));
    eventually(Duration::from_secs(5), "the background refresh", || async {
        upstream.hits() == 2
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "the refreshed entry answers",
        || async { x_cache(&http.get(&url).send().await.unwrap()) == "HIT" },
    )
    .await;
    assert_eq!(upstream.hits(), 2, "five stale answers, one refresh");
}

#[tokio::test]
async fn an_expired_entry_is_revalidated_with_a_conditional_request() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let url = gatehouse.url("/cached/r?max_age=1");
    let body = http.get(&url).send().await.unwrap().text().await.unwrap();
    tokio::time::sleep(EXPIRED).await;

    let revalidated = http.get(&url).send().await.unwrap();
    assert_eq!(
        (revalidated.status().as_u16(), x_cache(&revalidated)),
        (200, "REVALIDATED"),
        "the upstream's 304 refreshed the entry; the client, which asked for no condition, gets it whole"
    );
    assert_eq!(revalidated.text().await.unwrap(), body);
    let client_condition = http
        .get(&url)
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            client_condition.status().as_u16(),
            x_cache(&client_condition)
        ),
        (304, "HIT")
    );
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_stale_entry_answers_while_the_upstream_is_down_within_stale_if_error() {
    let mut upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let rescued = gatehouse.url("/cached/e?max_age=1&sie=60");
    let unprotected = gatehouse.url("/cached/n?max_age=1");
    let body = text_of(http.get(&rescued)).await;
    http.get(&unprotected).send().await.unwrap();
    tokio::time::sleep(EXPIRED).await;
    upstream.stop().await;

    let stale = http.get(&rescued).send().await.unwrap();
    assert_eq!((stale.status().as_u16(), x_cache(&stale)), (200, "STALE"));
    assert_eq!(stale.text().await.unwrap(), body);
    let failed = http.get(&unprotected).send().await.unwrap();
    assert_eq!(
        (failed.status().as_u16(), x_cache(&failed)),
        (502, "MISS"),
        "without stale-if-error the failure shows"
    );

    upstream.restart().await;
    let back = http.get(&rescued).send().await.unwrap();
    assert_eq!(
        x_cache(&back),
        "REVALIDATED",
        "with the upstream back, the entry is refreshed"
    );
}

#[tokio::test]
async fn the_clients_cache_control_limits_what_the_cache_answers_with() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let url = gatehouse.url("/cached/d");
    let ask = |header: &'static str, value: &'static str| {
        let request = http.get(&url).header(header, value).send();
        async move {
            let response = request.await.unwrap();
            (response.status().as_u16(), x_cache(&response).to_string())
        }
    };
    assert_eq!(
        ask("cache-control", "only-if-cached").await,
        (504, "MISS".into()),
        "not cached, and the client forbids going upstream"
    );
    assert_eq!(upstream.hits(), 0);
    assert_eq!(ask("x-first", "1").await, (200, "MISS".into()));
    for (header, value) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("cache-control", "min-fresh=120"),
        ("pragma", "no-cache"),
    ] {
        assert_eq!(
            ask(header, value).await,
            (200, "REVALIDATED".into()),
            "{header}: {value}"
        );
    }
    assert_eq!(upstream.hits(), 5, "each was a conditional request");
    assert_eq!(
        ask("cache-control", "max-age=60").await,
        (200, "HIT".into())
    );
    assert_eq!(
        ask("cache-control", "only-if-cached").await,
        (200, "HIT".into())
    );

    let private = gatehouse.url("/cached/private");
    let not_stored = http
        .get(&private)
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(
        x_cache(&not_stored),
        "BYPASS",
        "the built-in rules skip the cache for no-store"
    );
    let again = http.get(&private).send().await.unwrap();
    assert_eq!(x_cache(&again), "MISS", "no-store kept it out of the cache");

    let short = gatehouse.url("/cached/short?max_age=1");
    http.get(&short).send().await.unwrap();
    tokio::time::sleep(EXPIRED).await;
    let tolerant = http
        .get(&short)
        .header("cache-control", "max-stale=60")
        .send()
        .await
        .unwrap();
    assert_eq!(
        x_cache(&tolerant),
        "STALE",
        "the client accepts a stale answer"
    );
}

#[tokio::test]
async fn client_directives_can_be_ignored_as_nginx_does() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[cache]\nclient_directives = false\n{}",
        cached_site(&upstream, "builtin:cache-rules")
    ));
    let http = client(None);
    let url = gatehouse.url("/cached/i");
    http.get(&url).send().await.unwrap();
    let ignored = http
        .get(&url)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&ignored), "HIT");
    assert_eq!(upstream.hits(), 1);
}
