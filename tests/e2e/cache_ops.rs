//! Operating the cache: entries surviving a restart in the persistent tier (and a corrupt one
//! being fetched again), purges through the admin API, and its report.

use std::path::Path;
use std::time::Duration;

use gatehouse::store::{SledStore, Store, Tree};
use serde_json::{Value, json};

use crate::cache::{cached_site, x_cache};
use crate::support::{Gatehouse, Process, Upstream, client, eventually, free_port};

async fn report(gatehouse: &Gatehouse) -> Value {
    gatehouse.admin_json("/api/v1/cache").await
}

/// Flips the last body byte of the stored entry whose key ends with `suffix` (once the stopped
/// gatehouse's last thread has let go of the store).
async fn corrupt_entry(state_dir: &Path, suffix: &str) {
    let open = || SledStore::open(state_dir, 1 << 20, Duration::from_millis(100));
    let mut store = open();
    for _ in 0..100 {
        if store.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        store = open();
    }
    let store = store.unwrap();
    let mut found = None;
    store
        .visit(Tree::HttpCache, &mut |key, value| {
            if key.ends_with(suffix.as_bytes()) {
                found = Some((key.to_vec(), value.to_vec()));
            }
            true
        })
        .unwrap();
    let (key, mut value) = found.expect("the entry was stored");
    *value.last_mut().unwrap() ^= 0x20;
    store.put(Tree::HttpCache, &key, &value).unwrap();
    store.flush().unwrap();
}

/// `path`, asked once the persistent tier has indexed `entries` entries after a start.
async fn once_indexed(gatehouse: &Gatehouse, entries: u64, path: &str) -> reqwest::Response {
    eventually(Duration::from_secs(5), "the tier indexed", || async {
        report(gatehouse).await["disk"]["entries"] == entries
    })
    .await;
    client(None).get(gatehouse.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn entries_survive_a_restart_and_a_corrupt_one_is_fetched_again() {
    let upstream = Upstream::start("app").await;
    let mut gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let http = client(None);
    let mut bodies = Vec::new();
    for path in ["/cached/kept", "/cached/damaged"] {
        let first = http.get(gatehouse.url(path)).send().await.unwrap();
        assert_eq!(x_cache(&first), "MISS");
        bodies.push(first.text().await.unwrap());
    }
    gatehouse.stop();
    gatehouse.start_again().await;
    let restored = once_indexed(&gatehouse, 2, "/cached/kept").await;
    assert_eq!(x_cache(&restored), "HIT", "served from the persistent tier");
    assert_eq!(restored.text().await.unwrap(), bodies[0]);
    assert_eq!(upstream.hits(), 2);

    gatehouse.stop();
    corrupt_entry(&gatehouse.state_dir(), "/cached/damaged").await;
    gatehouse.start_again().await;
    let refetched = once_indexed(&gatehouse, 1, "/cached/damaged").await;
    assert_eq!(
        x_cache(&refetched),
        "MISS",
        "a damaged entry is dropped, never served"
    );
    assert_eq!(refetched.text().await.unwrap(), bodies[1]);
    assert_eq!(upstream.hits(), 3);
    let kept = http
        .get(gatehouse.url("/cached/kept"))
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&kept), "HIT");
}

#[tokio::test]
async fn purges_by_key_prefix_tag_and_host_through_the_admin_api() {
    let upstream = Upstream::start("app").await;
    let site = format!(
        "[admin]\ntoken = \"s3cret\"\n{}",
        cached_site(&upstream, "builtin:cache-rules")
    );
    let gatehouse = Gatehouse::start(&site);
    let http = client(None);
    let get = |path: &str| {
        http.get(gatehouse.url(path))
            .header("host", "shop.test")
            .send()
    };
    let paths = [
        "/cached/a/1",
        "/cached/a/2",
        "/cached/b?tag=blue",
        "/cached/c",
    ];
    let fill = || async {
        for path in paths {
            get(path).await.unwrap();
        }
    };
    let cached = || async {
        let mut states = Vec::new();
        for path in paths {
            states.push(x_cache(&get(path).await.unwrap()) == "HIT");
        }
        states
    };
    let purge_url = gatehouse.admin_url("/api/v1/cache/purge");
    let (http_ref, purge_url) = (&http, &purge_url);
    let purge = |body: Value| async move {
        let response = http_ref
            .post(purge_url)
            .bearer_auth("s3cret")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{body}");
        response.json::<Value>().await.unwrap()["purged"].clone()
    };
    fill().await;

    assert_eq!(purge(json!({"key": "shop.test/cached/c"})).await, 1);
    assert_eq!(cached().await, [true, true, true, false]);
    assert_eq!(purge(json!({"prefix": "shop.test/cached/a/"})).await, 2);
    assert_eq!(cached().await, [false, false, true, true]);
    assert_eq!(purge(json!({"tag": "blue"})).await, 1);
    assert_eq!(cached().await, [true, true, false, true]);
    let deleted = http
        .delete(gatehouse.admin_url("/api/v1/cache/hosts/shop.test"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap()["purged"], 4);
    assert_eq!(cached().await, [false, false, false, false]);

    let report: Value = http
        .get(gatehouse.admin_url("/api/v1/cache"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(report["hits"].as_u64().unwrap() >= 8, "{report}");
    assert!(report["misses"].as_u64().unwrap() >= 12, "{report}");
    assert!(
        report["upstream_bytes_saved"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["memory"]["entries"], 4, "{report}");

    let unauthorized = http
        .post(gatehouse.admin_url("/api/v1/cache/purge"))
        .json(&json!({"prefix": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["www-authenticate"], "Bearer");
    let malformed = http
        .post(gatehouse.admin_url("/api/v1/cache/purge"))
        .bearer_auth("s3cret")
        .json(&json!({"everything": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let error = malformed.json::<Value>().await.unwrap()["error"].to_string();
    assert!(error.contains("invalid request body"), "{error}");
    assert_eq!(
        cached().await,
        [true, true, true, true],
        "nothing was purged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_tier_evicts_and_the_process_stays_within_its_bound() {
    const MIB: u64 = 1024 * 1024;
    let upstream = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    let config = format!(
        "[edge]\nlisten = [\"127.0.0.1:{edge}\"]\nworkers = 1\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [state]\ndir = \"state\"\n\
         [cache]\nmemory = \"16 MiB\"\ndisk = \"0\"\n{}",
        cached_site(&upstream, "builtin:cache-rules")
    );
    std::fs::write(dir.path().join("gatehouse.toml"), config).unwrap();
    let gatehouse = Process::spawn(&["run", "-c", "gatehouse.toml"], dir.path(), &[]);
    gatehouse.wait_for_log("gatehouse is serving").await;
    let http = client(None);
    let fetch = |i: usize| {
        let url = format!("http://127.0.0.1:{edge}/cached/big/{i}?pad=262144");
        let request = http.get(url).send();
        async move { request.await.unwrap().bytes().await.unwrap().len() }
    };
    for i in 0..8 {
        fetch(i).await;
    }
    let baseline = gatehouse.rss();

    // 160 MiB of distinct entries through a 16 MiB tier, eight at a time.
    for batch in (8..648).collect::<Vec<_>>().chunks(8) {
        let sizes = futures_util::future::join_all(batch.iter().map(|&i| fetch(i))).await;
        assert!(sizes.iter().all(|&size| size > 256 * 1024));
    }
    let report: Value = http
        .get(format!("http://127.0.0.1:{admin}/api/v1/cache"))
        .bearer_auth(gatehouse.admin_token().await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (entries, bytes) = (
        report["memory"]["entries"].as_u64().unwrap(),
        report["memory"]["bytes"].as_u64().unwrap(),
    );
    assert!(bytes <= 16 * MIB, "the tier holds {bytes} bytes");
    assert!(
        entries > 0 && entries < 100,
        "{entries} entries: the oldest were evicted"
    );
    let grown = gatehouse.rss().saturating_sub(baseline);
    assert!(
        grown < 64 * MIB,
        "resident memory grew by {} MiB after 160 MiB went through a 16 MiB tier",
        grown / MIB
    );
}

#[tokio::test]
async fn the_warming_list_is_cached_in_every_coding_before_anyone_asks_and_again_on_schedule() {
    let upstream = Upstream::start("app").await;
    let site = format!(
        "[cache]\nwarm = [\"/cached/w1?pad=2000\", \"http://shop.test/cached/w2\", \"/cached/w3?max_age=1\"]\nwarm_interval = \"1s\"\n{}",
        cached_site(&upstream, "builtin:cache-rules")
    );
    let gatehouse = Gatehouse::start(&site);
    eventually(Duration::from_secs(10), "the list warmed", || async {
        report(&gatehouse).await["memory"]["entries"] == 3
    })
    .await;
    let http = client(None);
    let warmed = http
        .get(gatehouse.url("/cached/w1?pad=2000"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&warmed), "HIT");
    assert_eq!(warmed.headers()["content-encoding"], "br");
    let named_host = http
        .get(gatehouse.url("/cached/w2"))
        .header("host", "shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&named_host), "HIT", "warmed under its host");
    // The short-lived page is revalidated by the next rounds.
    eventually(Duration::from_secs(10), "warmed again", || async {
        upstream.hits() >= 5
    })
    .await;
}
