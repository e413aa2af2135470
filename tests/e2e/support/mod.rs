//! Test harness: start the real App from TOML (in-process, port 0) or the real binary, real
//! upstream servers, a test CA, and small clients.

pub mod browser;
pub mod otlp;
pub mod pebble;
pub mod postgres;
pub mod redis;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse::config::{ConfigError, load_from};
use gatehouse::{App, RunningApp};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use toml_edit::{DocumentMut, Item, value};

pub use upstream::{Scripted, Upstream, digest, pattern};

/// Waits until `check` holds, polling; fails the test with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not true within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gatehouse started in-process from a TOML config file written to a temp dir.
pub struct Gatehouse {
    app: Option<RunningApp>,
    /// The admin token generated at first start (none when the config sets one).
    admin_token: Option<String>,
    /// The config file (tests rewrite it to test reloads).
    pub config_path: PathBuf,
    /// Holds the config file and the state dir.
    pub dir: TempDir,
}

impl Gatehouse {
    /// Starts with `toml`, filling in test defaults where it is silent: listeners on
    /// 127.0.0.1:0, one worker, a fresh state dir.
    pub fn start(toml: &str) -> Self {
        Self::try_start(toml).unwrap_or_else(|err| panic!("gatehouse did not start: {err}"))
    }

    /// Like [`Gatehouse::start`], returning the error.
    pub fn try_start(toml: &str) -> Result<Self, gatehouse::AppError> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gatehouse.toml");
        std::fs::write(&config_path, with_test_defaults(toml, dir.path())).unwrap();
        let loaded = load_from(Some(&config_path), Vec::new())?;
        let app = App::new(loaded).start()?;
        Ok(Self {
            admin_token: app.new_admin_token().map(String::from),
            app: Some(app),
            config_path,
            dir,
        })
    }

    fn app(&self) -> &RunningApp {
        self.app.as_ref().expect("running")
    }

    /// The pooler's first listener.
    pub fn pool_addr(&self) -> std::net::SocketAddr {
        self.app().addrs().pool[0]
    }

    /// `http://` URL of the first plain edge listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().addrs().edge[0])
    }

    /// The first plain edge listener.
    pub fn edge_addr(&self) -> SocketAddr {
        self.app().addrs().edge[0]
    }

    /// The first TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        self.app().addrs().tls[0]
    }

    /// The first redirect listener.
    pub fn redirect_addr(&self) -> SocketAddr {
        self.app().addrs().redirect[0]
    }

    /// `http://` URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().addrs().admin)
    }

    /// The admin token generated when this gatehouse first started.
    pub fn admin_token(&self) -> &str {
        self.admin_token
            .as_deref()
            .expect("a generated admin token")
    }

    /// A `method` request to `path` on the admin listener, with the generated admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        client(None)
            .request(method, self.admin_url(path))
            .bearer_auth(self.admin_token())
    }

    /// The text at `path` on the admin listener (`/metrics`), fetched with the admin token.
    pub async fn admin_text(&self, path: &str) -> String {
        let answer = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        answer.text().await.unwrap()
    }

    /// The JSON document at `path` on the admin listener, fetched with the admin token.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        json_of(self.admin(reqwest::Method::GET, path)).await
    }

    /// Rewrites the config file (with test defaults, keeping ports as bound) and reloads.
    pub fn reload_with(&self, toml: &str) -> Result<(), ConfigError> {
        let addrs = self.app().addrs().clone();
        let mut doc: DocumentMut = with_test_defaults(toml, self.dir.path()).parse().unwrap();
        doc["edge"]["listen"] = value(toml_edit::Array::from_iter(
            addrs.edge.iter().map(|a| a.to_string()),
        ));
        doc["admin"]["listen"] = value(addrs.admin.to_string());
        std::fs::write(&self.config_path, doc.to_string()).unwrap();
        self.app().reload()
    }

    /// Waits until no request is in flight to the first server of group `app` (for example, a
    /// WebSocket tunnel has ended).
    pub async fn wait_until_idle(&self) {
        eventually(Duration::from_secs(5), "no request in flight", || async {
            let report = get_json(self.admin_url("/healthz")).await;
            report["checks"]["upstreams"]["detail"]["app"]["servers"][0]["in_flight"] == 0
        })
        .await;
    }

    /// Stops gracefully; the config file and state dir stay for [`Gatehouse::start_again`].
    pub fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown();
        }
    }

    /// Starts again from the same config file and state dir (on new ports), as a restart of the
    /// service would.
    pub async fn start_again(&mut self) {
        // The state dir's lock goes when the last of the old worker threads has ended.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let loaded = load_from(Some(&self.config_path), Vec::new()).unwrap();
            match App::new(loaded).start() {
                Ok(app) => return self.app = Some(app),
                Err(err) if err.to_string().contains("in use") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("gatehouse did not start again: {err}"),
            }
        }
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.app().begin_shutdown();
    }

    /// Waits until gatehouse has stopped.
    pub fn wait(mut self) {
        if let Some(app) = self.app.take() {
            app.wait();
        }
    }
}

/// `[upstreams.app]` with one server at `addr`; `extra` adds keys to that table.
pub fn app_upstream(addr: SocketAddr, extra: &str) -> String {
    format!("[upstreams.app]\nservers = [\"{addr}\"]\n{extra}\n")
}

/// Adds the test defaults to `toml` where it does not set them.
fn with_test_defaults(toml: &str, dir: &Path) -> String {
    let mut doc: DocumentMut = toml.parse().expect("test config is TOML");
    let mut set_default = |table: &str, key: &str, item: Item| {
        if doc.get(table).is_none() {
            doc[table] = toml_edit::table();
        }
        if doc[table].get(key).is_none() {
            doc[table][key] = item;
        }
    };
    set_default(
        "edge",
        "listen",
        value(toml_edit::Array::from_iter(["127.0.0.1:0"])),
    );
    set_default("edge", "workers", value(1));
    set_default("admin", "listen", value("127.0.0.1:0"));
    set_default(
        "pool",
        "listen",
        value(toml_edit::Array::from_iter(["127.0.0.1:0"])),
    );
    set_default("pool", "workers", value(2));
    set_default(
        "state",
        "dir",
        value(dir.join("state").display().to_string()),
    );
    doc.to_string()
}

/// The JSON document at `url` (an admin endpoint, say).
pub async fn get_json(url: String) -> serde_json::Value {
    json_of(client(None).get(url)).await
}

/// A config of `extra`, then one route `api` for every path to the group `app` at `upstream`.
pub fn api_site(upstream: &Upstream, extra: &str) -> String {
    format!(
        "{extra}\n[[routes]]\nname = \"api\"\npath = \"/\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        upstream.addr
    )
}

/// The JSON document `request` answers with.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The body `request` answers with, as text.
pub async fn text_of(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// An HTTP client that never uses a proxy and trusts `ca` when given.
pub fn client(ca: Option<&TestCa>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        builder =
            builder.tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()]);
    }
    builder.build().unwrap()
}

/// Sends raw bytes to `addr` and returns everything read until the server closes or `wait`
/// passes: for requests no well-behaved client would send.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The final status code of a raw HTTP response (interim 1xx answers skipped).
pub fn status_of(response: &str) -> u16 {
    response
        .split("HTTP/1.1 ")
        .filter_map(|part| part.get(..3)?.parse::<u16>().ok())
        .find(|status| !(100..200).contains(status) || *status == 101)
        .unwrap_or(0)
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl TestCa {
    /// A new CA.
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gatehouse test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `localhost` and `127.0.0.1`, written as `NAME.crt` and `NAME.key`
    /// in `dir`; returns the two paths and the certificate's DER.
    pub fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        self.issue_for(dir, name, &["localhost", "127.0.0.1"])
    }

    /// [`TestCa::issue`] for the names `hosts`.
    pub fn issue_for(&self, dir: &Path, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
        let hosts = hosts
            .iter()
            .map(|host| host.to_string())
            .collect::<Vec<_>>();
        let params = rcgen::CertificateParams::new(hosts).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().to_vec())
    }
}

/// A free loopback port (bound, then released) for tests of the binary, which cannot report a
/// port 0 back.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `gatehouse` binary running as a child process, with its output collected.
pub struct Process {
    child: tokio::process::Child,
    /// Lines written to stdout (access log).
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Lines written to stderr (process log).
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The tasks collecting the two pipes; they end at EOF.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Runs `gatehouse ARGS` in `cwd` with only `env` added to a clean environment.
    pub fn spawn(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gatehouse");
        let collect = |pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            let reader = tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
            (lines, reader)
        };
        let (stdout, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
        let (stderr, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Waits until a stderr line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        eventually(
            Duration::from_secs(20),
            &format!("log line containing {needle:?}"),
            || async {
                self.stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|line| line.contains(needle))
            },
        )
        .await;
    }

    /// Resident memory of the process, in bytes (from `/proc`).
    pub fn rss(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Sends a signal by name (TERM, HUP, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and its output to be collected; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("gatehouse did not exit");
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status.unwrap().code()
    }

    /// The admin token the process printed at its first start.
    pub async fn admin_token(&self) -> String {
        self.wait_for_log("gatehouse admin token").await;
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .find_map(|line| line.trim().strip_prefix("gh_"))
            .map(|token| format!("gh_{token}"))
            .expect("the token on a line of its own")
    }

    /// Everything written to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}
