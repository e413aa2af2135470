//! The admin web UI in a real headless Chromium, against a running gatehouse with real traffic:
//! logging in and out, live charts, purging, plugin uploads, alerts, load tests, and the page's
//! own headers. Screenshots land in `$CARGO_TARGET_DIR/ui-screenshots/`.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::Method;
use serde_json::Value;

use crate::cache::cached_site;
use crate::support::browser::Browser;
use crate::support::{Gatehouse, Upstream, api_site, client, eventually};

/// Readings every 200 ms, so charts have points within a second.
const FAST_MONITORING: &str = "[monitoring]\nwindow = \"30s\"\nsample_interval = \"200ms\"\n";

/// The admin API with the browser's session cookie instead of the token.
async fn with_cookie(gatehouse: &Gatehouse, cookie: &str, path: &str) -> u16 {
    client(None)
        .get(gatehouse.admin_url(path))
        .header("cookie", format!("gatehouse_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_watch_the_charts_draw_and_log_out_refusing_the_old_cookie() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&api_site(&upstream, FAST_MONITORING));
    let traffic = {
        let url = gatehouse.url("/x");
        tokio::spawn(async move {
            let http = client(None);
            loop {
                let _ = http.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let browser = Browser::start(1280).await;
    browser
        .client
        .goto(&format!("{}/ui/", gatehouse.admin_url("")))
        .await
        .unwrap();
    // A wrong token is refused on the page.
    let field = browser.find("#login-token").await;
    field.send_keys("gh_wrong").await.unwrap();
    browser.find("#login-submit").await.click().await.unwrap();
    browser.text_containing("#login-error", "token").await;
    browser.screenshot("login-refused").await;
    field.clear().await.unwrap();

    browser
        .log_in(&gatehouse.admin_url(""), gatehouse.admin_token())
        .await;
    for chart in ["chart-requests", "chart-latency", "chart-errors"] {
        let css = format!("[data-testid=\"{chart}\"]");
        eventually(
            Duration::from_secs(20),
            &format!("{chart} draws points"),
            || async {
                let points = browser.attribute(&css, "data-points").await;
                points.and_then(|p| p.parse::<u32>().ok()).unwrap_or(0) >= 2
            },
        )
        .await;
    }
    let status = browser
        .text_containing("[data-testid=\"status\"]", "store")
        .await;
    assert!(status.contains("ok"), "{status}");
    browser.screenshot("overview-1280").await;

    let cookie = browser.session_cookie().await.expect("a session cookie");
    assert_eq!(
        with_cookie(&gatehouse, &cookie, "/api/v1/overview").await,
        200
    );
    // Without the CSRF header, the cookie cannot change anything.
    let forged = client(None)
        .post(gatehouse.admin_url("/api/v1/recommendations/refresh"))
        .header("cookie", format!("gatehouse_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    browser.find("#logout").await.click().await.unwrap();
    browser.find("#login-form").await;
    assert_eq!(
        with_cookie(&gatehouse, &cookie, "/api/v1/overview").await,
        401
    );
    traffic.abort();
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_a_phone_and_its_assets_are_cached_under_a_strict_policy() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&api_site(&upstream, FAST_MONITORING));
    let http = client(None);
    let page = http.get(gatehouse.admin_url("/ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a script tag")
        .to_string();
    assert!(
        script.starts_with("/ui/assets/") && script.ends_with("/app.js"),
        "{script}"
    );
    let asset = http.get(gatehouse.admin_url(&script)).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = asset.headers()["etag"].clone();
    let again = http
        .get(gatehouse.admin_url(&script))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let stale = http
        .get(gatehouse.admin_url("/ui/assets/0000000000000000/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);

    let browser = Browser::logged_in(&gatehouse, 390).await;
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page scrolls sideways by {overflow}"
    );
    browser.screenshot("overview-390").await;

    // The theme toggle repaints the page dark, and back.
    let background = async || {
        let painted = browser
            .client
            .execute(
                "return getComputedStyle(document.body).backgroundColor",
                vec![],
            )
            .await
            .unwrap();
        painted.as_str().unwrap().to_string()
    };
    let light = background().await;
    browser.find("#theme-toggle").await.click().await.unwrap();
    let dark = background().await;
    assert_ne!(light, dark);
    browser.screenshot("overview-390-dark").await;
    browser.find("#theme-toggle").await.click().await.unwrap();
    assert_eq!(background().await, light);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_key_from_the_ui_makes_the_next_request_miss() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&cached_site(&upstream, "builtin:cache-rules"));
    let x_cache = || async {
        let answer = client(None)
            .get(gatehouse.url("/cached/page"))
            .send()
            .await
            .unwrap();
        answer.headers()["x-cache"].to_str().unwrap().to_string()
    };
    assert_eq!(x_cache().await, "MISS");
    eventually(Duration::from_secs(5), "a hit", || async {
        x_cache().await == "HIT"
    })
    .await;
    let keys = gatehouse.admin_json("/api/v1/cache/keys").await;
    let key = keys[0]["key"]
        .as_str()
        .expect("a key in memory")
        .to_string();
    assert!(keys[0]["hits"].as_u64().unwrap() >= 1, "{keys:#}");

    let browser = Browser::logged_in(&gatehouse, 1280).await;
    browser.open("#/cache").await;
    browser
        .find("#purge-value")
        .await
        .send_keys(&key)
        .await
        .unwrap();
    browser.find("#purge-submit").await.click().await.unwrap();
    browser.find("#confirm-ok").await.click().await.unwrap();
    browser.text_containing("#purge-result", "1").await;
    browser.screenshot("cache-purged").await;
    assert_eq!(x_cache().await, "MISS");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_goes_live_and_a_broken_one_shows_its_error() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = tempfile::tempdir().unwrap();
    let plugin = plugins.path().join("limits.wasm");
    std::fs::copy(root.join("policies/dist/rate-limit.wasm"), &plugin).unwrap();
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&format!(
        "[plugins.limits]\nkind = \"rate-limit\"\nsource = \"{}\"\n\n[[routes]]\npath = \"/\"\n\
         upstream = \"app\"\nrate_limit = \"limits\"\n\n[upstreams.app]\nservers = [\"{}\"]\n",
        plugin.display(),
        upstream.addr
    ));
    let sha_of = |listing: &Value| listing[0]["sha256"].as_str().unwrap().to_string();
    let before = sha_of(&gatehouse.admin_json("/api/v1/plugins").await);

    let browser = Browser::logged_in(&gatehouse, 1280).await;
    browser.open("#/plugins").await;
    let tiered = root.join("examples/plugins/dist/tiered-quotas.wasm");
    upload(&browser, &tiered).await;
    let result = browser
        .text_containing("#plugin-upload-result", "sha")
        .await;
    let after = sha_of(&gatehouse.admin_json("/api/v1/plugins").await);
    assert_ne!(after, before);
    assert!(result.contains(&after[..12]), "{result} / {after}");
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(&tiered).unwrap()
    );
    browser
        .text_containing(
            "[data-testid=\"plugins\"] [data-plugin=\"limits\"]",
            &after[..12],
        )
        .await;

    let broken = plugins.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not really").unwrap();
    upload(&browser, &broken).await;
    let refused = browser
        .text_containing("#plugin-upload-result", "limits")
        .await;
    let class = browser
        .attribute("#plugin-upload-result", "class")
        .await
        .unwrap_or_default();
    assert!(class.contains("error"), "{class}: {refused}");
    browser.screenshot("plugin-upload-refused").await;
    // The build in use and the file are untouched.
    assert_eq!(
        sha_of(&gatehouse.admin_json("/api/v1/plugins").await),
        after
    );
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(&tiered).unwrap()
    );
    browser.close().await;
}

async fn upload(browser: &Browser, file: &std::path::Path) {
    let input = browser.find("#plugin-upload-file").await;
    let file = std::fs::canonicalize(file).unwrap();
    input.send_keys(&file.display().to_string()).await.unwrap();
    browser
        .find("#plugin-upload-submit")
        .await
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_on_the_page_when_errors_cross_its_threshold() {
    let upstream = Upstream::start("app").await;
    let gatehouse = Gatehouse::start(&api_site(
        &upstream,
        &format!(
            "{FAST_MONITORING}\n[alerts]\ndefaults = false\n\n[[alerts.rules]]\nname = \"api-errors\"\n\
             measure = \"error_ratio\"\nroute = \"api\"\nabove = 0.5\nfor = \"400ms\"\nwindow = \"5s\"\n\
             severity = \"critical\"\nmin_requests_per_second = 0\n"
        ),
    ));
    let browser = Browser::logged_in(&gatehouse, 1280).await;
    browser.open("#/alerts").await;
    let firing = "[data-testid=\"alerts-firing\"] [data-alert=\"api-errors\"]";
    assert!(browser.client.find(Locator::Css(firing)).await.is_err());
    let http = client(None);
    for _ in 0..10 {
        let failed = http.get(gatehouse.url("/status/500")).send().await.unwrap();
        failed.bytes().await.unwrap();
    }
    browser.text_containing(firing, "critical").await;
    browser.screenshot("alert-firing").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_test_runs_from_the_page_with_progress_and_a_report() {
    let upstream = Upstream::start("app").await;
    let target = format!("http://{}/x", upstream.addr);
    let gatehouse = Gatehouse::start(&api_site(
        &upstream,
        &format!("[load_test]\nurls = [\"{target}\"]\nlevels = [2]\nduration = \"2s\"\n"),
    ));
    // Anything but a configured URL is refused.
    let refused = gatehouse
        .admin(Method::POST, "/api/v1/load-tests")
        .json(&serde_json::json!({ "url": "http://127.0.0.1:1/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let browser = Browser::logged_in(&gatehouse, 1280).await;
    browser.open("#/load-test").await;
    let duration = browser.find("#loadtest-duration").await;
    duration.clear().await.unwrap();
    duration.send_keys("2s").await.unwrap();
    let concurrency = browser.find("#loadtest-concurrency").await;
    concurrency.clear().await.unwrap();
    concurrency.send_keys("2,4").await.unwrap();
    browser.find("#loadtest-start").await.click().await.unwrap();
    eventually(Duration::from_secs(5), "progress shows", || async {
        let value = browser.attribute("#loadtest-progress", "value").await;
        value.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) > 0.0
    })
    .await;
    browser.screenshot("load-test-running").await;
    let report = browser.text_containing("#loadtest-report", "4").await;
    assert!(report.contains('2'), "{report}");
    let runs = gatehouse.admin_json("/api/v1/load-tests").await;
    let levels = &runs[0]["reports"][0]["levels"];
    assert_eq!(levels.as_array().map(Vec::len), Some(2), "{runs:#}");
    assert!(levels[1]["requests"].as_u64().unwrap() > 0);
    browser.screenshot("load-test-done").await;
    browser.close().await;
}
