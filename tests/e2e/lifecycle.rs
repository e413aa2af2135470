//! Lifecycle: drain on shutdown, signals, reload, the access log, the state-dir lock and the
//! embedded defaults, through the App and through the real binary.

use std::time::{Duration, Instant};

use crate::support::{Gatehouse, Process, Upstream, app_upstream, client, eventually, free_port};

fn binary_config(edge: u16, admin: u16, upstream: &Upstream, extra: &str) -> String {
    format!(
        "[edge]\nlisten = [\"127.0.0.1:{edge}\"]\nworkers = 1\ndrain_timeout = \"10s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{extra}\n[upstreams.app]\nservers = [\"{}\"]\n",
        upstream.addr
    )
}

/// A temp dir holding `g.toml`: `binary_config` on two free ports for `upstream`.
fn binary_site(upstream: &Upstream) -> (tempfile::TempDir, u16, u16) {
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("g.toml"),
        binary_config(edge, admin, upstream, ""),
    )
    .unwrap();
    (dir, edge, admin)
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&app_upstream(upstream.addr, ""));
    let url = gatehouse.url("/slow?ms=1500");
    let in_flight = tokio::spawn(client(None).get(url).send());
    upstream.wait_for_hits(1).await;
    let edge = gatehouse.edge_addr();
    gatehouse.begin_shutdown();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes during the drain");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow done");
    eventually(
        Duration::from_secs(5),
        "new connections are refused once draining",
        || async { tokio::net::TcpStream::connect(edge).await.is_err() },
    )
    .await;
    tokio::task::spawn_blocking(move || gatehouse.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_drain_deadline_cuts_requests_that_run_too_long() {
    let upstream = Upstream::start("a").await;
    let gatehouse = Gatehouse::start(&format!(
        "[edge]\ndrain_timeout = \"1s\"\n[upstreams.app]\nservers = [\"{}\"]\n",
        upstream.addr
    ));
    let too_slow = tokio::spawn(client(None).get(gatehouse.url("/slow?ms=20000")).send());
    upstream.wait_for_hits(1).await;
    let started = Instant::now();
    gatehouse.begin_shutdown();
    tokio::task::spawn_blocking(move || gatehouse.wait())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}, deadline 1s",
        started.elapsed()
    );
    assert!(
        too_slow.await.unwrap().is_err(),
        "the unfinished request is cut at the deadline"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let upstream = Upstream::start("a").await;
    let (dir, edge, _) = binary_site(&upstream);
    let mut process = Process::spawn(&["run", "-c", "g.toml"], dir.path(), &[]);
    process.wait_for_log("gatehouse is serving").await;
    let in_flight = tokio::spawn(
        client(None)
            .get(format!("http://127.0.0.1:{edge}/slow?ms=1500"))
            .send(),
    );
    upstream.wait_for_hits(1).await;
    let started = Instant::now();
    process.signal("TERM");
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request finished during drain");
    assert_eq!(response.text().await.unwrap(), "slow done");
    assert_eq!(
        process.exit_code().await,
        Some(0),
        "{}",
        process.stderr_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain waited for more than the request"
    );
    assert!(process.stderr_text().contains("draining"));
}

#[tokio::test]
async fn sighup_reloads_and_refuses_a_bad_config() {
    let first = Upstream::start("first").await;
    let second = Upstream::start("second").await;
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    let path = dir.path().join("g.toml");
    std::fs::write(&path, binary_config(edge, admin, &first, "")).unwrap();
    let process = Process::spawn(&["run", "-c", "g.toml"], dir.path(), &[]);
    process.wait_for_log("gatehouse is serving").await;
    let who = || async move {
        client(None)
            .get(format!("http://127.0.0.1:{edge}/who"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(who().await, "first GET /who");

    std::fs::write(&path, binary_config(edge, admin, &second, "")).unwrap();
    process.signal("HUP");
    process.wait_for_log("configuration reloaded").await;
    assert_eq!(who().await, "second GET /who");

    std::fs::write(
        &path,
        binary_config(
            edge,
            admin,
            &first,
            "[[routes]]\npath = \"/\"\nupstream = \"nowhere\"\n",
        ),
    )
    .unwrap();
    process.signal("HUP");
    process.wait_for_log("reload refused").await;
    let log = process.stderr_text();
    assert!(
        log.contains("g.toml:") && log.contains("routes.0.upstream") && log.contains("\"nowhere\""),
        "{log}"
    );
    assert_eq!(
        who().await,
        "second GET /who",
        "the old config keeps serving"
    );
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_with_its_trace_id() {
    let upstream = Upstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    // Traces on (to a collector nobody runs): the access log carries each request's trace id.
    let collector = free_port();
    let extra = format!(
        "[log]\naccess = \"json\"\n\n[traces]\nenabled = true\nendpoint = \"http://127.0.0.1:{collector}\"\n"
    );
    std::fs::write(
        dir.path().join("g.toml"),
        binary_config(edge, admin, &upstream, &extra),
    )
    .unwrap();
    let process = Process::spawn(&["run", "-c", "g.toml"], dir.path(), &[]);
    process.wait_for_log("gatehouse is serving").await;
    let http = client(None);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    for (path, traceparent) in [("/big?bytes=5000", parent.as_str()), ("/status/404", "")] {
        http.get(format!("http://127.0.0.1:{edge}{path}"))
            .header("user-agent", "e2e \"quoted\"")
            .header("traceparent", traceparent)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(5), "two access lines", || async {
        process.stdout.lock().unwrap().len() >= 2
    })
    .await;
    let lines = process.stdout.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 5000);
    assert_eq!(first["target"], "/big?bytes=5000");
    assert_eq!(first["route"], "default");
    assert_eq!(first["upstream"], upstream.addr.to_string());
    assert_eq!(first["user_agent"], "e2e \"quoted\"");
    assert!(first["request_id"].as_str().unwrap().len() > 10);
    assert!(
        first["duration_ms"].as_f64().unwrap() >= first["upstream_header_ms"].as_f64().unwrap()
    );
    assert_eq!(first["trace_id"], trace, "the client's trace, continued");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 404);
    let fresh = second["trace_id"].as_str().unwrap();
    assert!(fresh.len() == 32 && fresh != trace, "a new trace: {fresh}");
}

#[tokio::test]
async fn a_second_gatehouse_on_the_same_state_dir_is_refused() {
    let upstream = Upstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (edge, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("one.toml"),
        binary_config(edge, admin, &upstream, ""),
    )
    .unwrap();
    let (edge2, admin2) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("two.toml"),
        binary_config(edge2, admin2, &upstream, ""),
    )
    .unwrap();
    let first = Process::spawn(&["run", "-c", "one.toml"], dir.path(), &[]);
    first.wait_for_log("gatehouse is serving").await;
    let mut second = Process::spawn(&["run", "-c", "two.toml"], dir.path(), &[]);
    assert_eq!(second.exit_code().await, Some(2));
    let message = second.stderr_text();
    assert!(
        message.contains("state.dir") && message.contains("in use by another gatehouse (pid"),
        "{message}"
    );
}

/// The README's first command: no config file, no environment, defaults only.
#[tokio::test]
async fn runs_on_embedded_defaults() {
    let upstream = Upstream::start_on("app", "127.0.0.1:3000".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let process = Process::spawn(&["run"], dir.path(), &[]);
    process.wait_for_log("gatehouse is serving").await;
    let http = client(None);
    assert_eq!(
        http.get("http://127.0.0.1:8080/hello")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "app GET /hello"
    );
    assert_eq!(
        http.get("http://127.0.0.1:9901/readyz")
            .bearer_auth(process.admin_token().await)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        dir.path().join("data/gatehouse.lock").exists(),
        "state lives in ./data"
    );
    drop(upstream);
    drop(process);
}

/// As systemd runs it (`Type=notify`, `WatchdogSec`): READY once serving, watchdog pings while
/// it runs, RELOADING then READY on SIGHUP, STOPPING on SIGTERM; and `gatehouse health` passes
/// while it serves and fails once it is gone.
#[tokio::test]
async fn tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    let upstream = Upstream::start("app").await;
    let (dir, _, admin) = binary_site(&upstream);
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let notify = socket_path.display().to_string();
    let mut process = Process::spawn(
        &["run", "-c", "g.toml"],
        dir.path(),
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "200000")],
    );
    let next = async || {
        let mut message = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut message))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&message[..read]).into_owned()
    };
    assert_eq!(next().await, "READY=1\n");
    // Pinged twice per period: 100 ms apart.
    assert_eq!(next().await, "WATCHDOG=1\n");
    assert_eq!(next().await, "WATCHDOG=1\n");

    let admin_address = format!("127.0.0.1:{admin}");
    let mut healthy = Process::spawn(&["health", "--admin", &admin_address], dir.path(), &[]);
    assert_eq!(healthy.exit_code().await, Some(0));
    let mut by_config = Process::spawn(&["health", "-c", "g.toml"], dir.path(), &[]);
    assert_eq!(by_config.exit_code().await, Some(0));

    process.signal("HUP");
    let mut seen = Vec::new();
    while !seen.contains(&"READY=1\n".to_string()) {
        let message = next().await;
        if message != "WATCHDOG=1\n" {
            seen.push(message);
        }
    }
    assert_eq!(seen, ["RELOADING=1\n", "READY=1\n"]);

    process.signal("TERM");
    loop {
        let message = next().await;
        if message != "WATCHDOG=1\n" {
            assert_eq!(message, "STOPPING=1\n");
            break;
        }
    }
    assert_eq!(process.exit_code().await, Some(0));
    let mut gone = Process::spawn(&["health", "--admin", &admin_address], dir.path(), &[]);
    assert_eq!(gone.exit_code().await, Some(1));
    assert!(
        gone.stderr_text().contains("not healthy"),
        "{}",
        gone.stderr_text()
    );
}
