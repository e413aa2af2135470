//! The admin token: required everywhere on the admin listener but `/health*`, generated and
//! printed once on first start, kept only as a digest, rotated by `gatehouse admin-token rotate`
//! whether gatehouse runs or not, and guessing slowed down per address.

use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::support::{Gatehouse, Process, client, free_port};

#[tokio::test]
async fn admin_routes_need_the_token_except_health() {
    let mut gatehouse = Gatehouse::start("");
    let token = gatehouse.admin_token().to_string();
    let http = client(None);
    let calls = [
        (Method::GET, "/readyz"),
        (Method::GET, "/api/v1/cache"),
        (Method::GET, "/api/v1/plugins"),
        (Method::POST, "/api/v1/cache/purge"),
        (Method::DELETE, "/api/v1/cache/hosts/example.com"),
        // Under the lockout's 10 wrong tokens: one wrong try per call.
        (Method::GET, "/api/v1/overview"),
        (Method::GET, "/api/v1/config"),
        (Method::POST, "/ui/logout"),
    ];
    for (method, path) in &calls {
        let call = || {
            http.request(method.clone(), gatehouse.admin_url(path))
                .json(&json!({"prefix": "none/"}))
        };
        let missing = call().send().await.unwrap();
        assert_eq!(missing.status(), 401, "{method} {path} without a token");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        let wrong = call().bearer_auth("gh_wrong").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
        let right = call().bearer_auth(&token).send().await.unwrap();
        assert!(
            right.status().is_success(),
            "{method} {path} with the token"
        );
    }
    for path in ["/health", "/healthz"] {
        let open = http.get(gatehouse.admin_url(path)).send().await.unwrap();
        assert_eq!(open.status(), 200, "{path} needs no token");
    }

    gatehouse.stop();
    assert!(
        !contains_anywhere(&gatehouse.state_dir(), token.as_bytes()),
        "the token itself is stored nowhere"
    );
}

#[tokio::test]
async fn an_address_that_keeps_guessing_is_refused_even_with_the_right_token() {
    let gatehouse = Gatehouse::start("");
    let http = client(None);
    let guess = |token: &str| {
        http.get(gatehouse.admin_url("/api/v1/cache"))
            .bearer_auth(token)
            .send()
    };
    for attempt in 0..10 {
        let status = guess(&format!("gh_guess{attempt}")).await.unwrap().status();
        assert_eq!(status, 401);
    }
    let refused = guess(gatehouse.admin_token()).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=6).contains(&retry),
        "one more attempt every 6 s: {retry}"
    );
    let health = http
        .get(gatehouse.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "health stays open");
}

/// `gatehouse admin-token rotate -c gatehouse.toml` in `dir`: its stdout, or its stderr.
fn rotate(dir: &Path) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["admin-token", "rotate", "-c", "gatehouse.toml"])
        .current_dir(dir)
        .env_clear()
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap().trim().to_string();
    if output.status.success() {
        Ok(text(output.stdout))
    } else {
        Err(text(output.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_printed_once_and_rotated_by_the_cli_running_or_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    let config = format!(
        "[edge]\nlisten = [\"127.0.0.1:{edge}\"]\nworkers = 1\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n[state]\ndir = \"state\"\n"
    );
    std::fs::write(dir.path().join("gatehouse.toml"), config).unwrap();
    let start = || Process::spawn(&["run", "-c", "gatehouse.toml"], dir.path(), &[]);
    let http = client(None);
    let status = |token: String| {
        let call = http
            .get(format!("http://127.0.0.1:{admin}/api/v1/cache"))
            .bearer_auth(token)
            .send();
        async move { call.await.unwrap().status().as_u16() }
    };

    let mut first = start();
    let printed = first.admin_token().await;
    assert_eq!(status(printed.clone()).await, 200);
    let rotated = rotate(dir.path()).expect("rotated through the control socket");
    assert!(
        rotated.starts_with("gh_") && rotated != printed,
        "{rotated}"
    );
    assert_eq!(
        status(printed.clone()).await,
        401,
        "the old token stops at once"
    );
    assert_eq!(status(rotated.clone()).await, 200);
    first.signal("TERM");
    assert_eq!(first.exit_code().await, Some(0));

    let mut second = start();
    second.wait_for_log("gatehouse is serving").await;
    assert!(
        !second.stderr_text().contains("admin token"),
        "printed once, at the first start only"
    );
    assert_eq!(status(rotated.clone()).await, 200, "kept across restarts");
    second.signal("TERM");
    assert_eq!(second.exit_code().await, Some(0));

    let offline = rotate(dir.path()).expect("rotated in the store while stopped");
    let third = start();
    third.wait_for_log("gatehouse is serving").await;
    assert_eq!(status(offline).await, 200);
    assert_eq!(status(rotated).await, 401);
    drop(third);

    let configured = "[admin]\ntoken = \"from-config\"\n";
    std::fs::write(dir.path().join("gatehouse.toml"), configured).unwrap();
    let refused = rotate(dir.path()).unwrap_err();
    assert!(
        refused.contains("admin.token is set in the config"),
        "{refused}"
    );
}

/// Whether any file under `dir` holds `needle`.
fn contains_anywhere(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return contains_anywhere(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|window| window == needle)
    })
}

/// The web UI's session: the token buys an HttpOnly cookie; the cookie reads, but changes
/// nothing without the session's CSRF token; logging out or rotating the token ends it.
#[tokio::test]
async fn a_ui_session_reads_changes_only_with_its_csrf_token_and_ends() {
    let gatehouse = Gatehouse::start("");
    let http = client(None);
    let login = |token: &str| {
        http.post(gatehouse.admin_url("/ui/login"))
            .json(&json!({ "token": token }))
            .send()
    };
    assert_eq!(login("gh_wrong").await.unwrap().status(), 401);
    let answer = login(gatehouse.admin_token()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let set_cookie = answer.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = answer.json::<serde_json::Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let with_cookie = |method: Method, path: &str| {
        http.request(method, gatehouse.admin_url(path))
            .header("cookie", &cookie)
    };
    let session = with_cookie(Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    assert_eq!(
        session.json::<serde_json::Value>().await.unwrap()["csrf"],
        csrf
    );
    let purge =
        || with_cookie(Method::POST, "/api/v1/cache/purge").json(&json!({ "prefix": "none/" }));
    assert_eq!(purge().send().await.unwrap().status(), 403);
    let forged = purge()
        .header("x-csrf-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let allowed = purge().header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(allowed.status(), 200);

    let logout = with_cookie(Method::POST, "/ui/logout")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let ended = with_cookie(Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 401);

    // Wrong tokens at the login form count as guesses, like wrong bearer tokens.
    for _ in 0..10 {
        login("gh_guess").await.unwrap();
    }
    assert_eq!(login(gatehouse.admin_token()).await.unwrap().status(), 429);
}
