//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`):
//! one chromedriver per test on a free port, and helpers to wait for what the page shows.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;

use super::{Gatehouse, eventually, free_port};

/// Where screenshots go: beside the builds, kept as test artifacts.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A browser session; the driver process ends with it.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` pixels wide.
    pub async fn start(width: u32) -> Self {
        let port = free_port();
        // Its own process group: the browsers it starts end with it, even when a test panics.
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) is installed");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},900")],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Self { client, driver };
                }
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session from chromedriver: {last_error}");
    }

    /// The element `css` matches, once it exists.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css}: {err}"))
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub async fn text_containing(&self, css: &str, needle: &str) -> String {
        eventually(
            Duration::from_secs(20),
            &format!("{css} to contain {needle:?}"),
            || async { self.text(css).await.contains(needle) },
        )
        .await;
        self.text(css).await
    }

    /// The text of `css`; empty when nothing matches.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The attribute `name` of `css`, when both exist.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(name).await.ok().flatten()
    }

    /// Saves a screenshot as `name`.png among the test artifacts.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
    }

    /// Opens the UI at `admin` (an `http://host:port` origin), logs in with `token` from the
    /// keyboard (type, then Enter) and waits for the overview.
    pub async fn log_in(&self, admin: &str, token: &str) {
        self.client
            .goto(&format!("{admin}/ui/"))
            .await
            .expect("the UI opens");
        let field = self.find("#login-token").await;
        field.send_keys(token).await.unwrap();
        field.send_keys("\u{E007}").await.unwrap(); // Enter
        self.find("[data-testid=\"chart-requests\"]").await;
    }

    /// A browser `width` pixels wide, logged in to `gatehouse`'s UI.
    pub async fn logged_in(gatehouse: &Gatehouse, width: u32) -> Self {
        let browser = Self::start(width).await;
        browser
            .log_in(&gatehouse.admin_url(""), gatehouse.admin_token())
            .await;
        browser
    }

    /// Goes to a page by its link in the navigation (`#/cache`).
    pub async fn open(&self, page: &str) {
        let link = self.find(&format!("nav a[href=\"{page}\"]")).await;
        link.click().await.unwrap();
    }

    /// The value of the session cookie, as the browser holds it.
    pub async fn session_cookie(&self) -> Option<String> {
        let cookies = self.client.get_all_cookies().await.unwrap();
        cookies
            .iter()
            .find(|cookie| cookie.name() == "gatehouse_session")
            .map(|cookie| cookie.value().to_string())
    }

    /// Ends the session and the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(group) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
        }
    }
}
