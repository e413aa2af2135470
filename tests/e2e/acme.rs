//! Automatic HTTPS against a real ACME server (pebble): first issuance over HTTP-01 and over
//! TLS-ALPN-01, HTTPS that validates against pebble's root, a restart that places no new order,
//! renewal of short-lived certificates under concurrent handshakes, and a challenge that cannot
//! be answered (error in `/healthz` and an alert, the old certificate still served, a later
//! retry that succeeds), a certificate about to expire (in `/healthz` and on the web UI's
//! overview), and certificates on demand (at the first handshake, for listed names
//! the ask URL allows, within the order budget).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use crate::support::browser::Browser;
use crate::support::pebble::Pebble;
use crate::support::{Gatehouse, TestCa, Upstream, eventually, free_port, get_json};

const HOST: &str = "site.gatehouse.test";

/// A gatehouse with one `tls = "auto"` site for [`HOST`], its plain listener on `plain` and
/// its TLS listener on `tls`, retrying failures after a second.
fn auto_site(
    pebble: &Pebble,
    challenges: &[&str],
    plain: u16,
    tls: u16,
    upstream: &Upstream,
) -> String {
    format!(
        "[edge]\nlisten = [\"127.0.0.1:{plain}\"]\n\n[edge.tls]\nlisten = [\"127.0.0.1:{tls}\"]\n\n\
         [[edge.tls.sites]]\nhosts = [\"{HOST}\"]\ntls = \"auto\"\n\n\
         [edge.tls.acme]\n{}retry_after = \"1s\"\n\n[upstreams.app]\nservers = [\"{}\"]\n",
        pebble.acme_config(challenges),
        upstream.addr,
    )
}

/// The site's entry in `/healthz`.
async fn site(gatehouse: &Gatehouse) -> Value {
    let report = get_json(gatehouse.admin_url("/healthz")).await;
    report["checks"]["tls"]["detail"]["sites"][0].clone()
}

/// Waits for the site's certificate to be valid and returns its entry.
async fn certified(gatehouse: &Gatehouse) -> Value {
    certificate_becomes(gatehouse, "valid", Duration::from_secs(60)).await
}

/// Waits until the site's certificate is in `state` and returns its entry; a test that gives
/// up shows the entry it saw last, with its times and errors, and how often it looked.
async fn certificate_becomes(gatehouse: &Gatehouse, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let (mut polls, mut slowest) = (0, Duration::ZERO);
    loop {
        let asked = Instant::now();
        let site = site(gatehouse).await;
        polls += 1;
        slowest = slowest.max(asked.elapsed());
        if site["certificate"] == state {
            return site;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate is not {state} within {within:?} ({polls} polls, the slowest \
             {slowest:?}); last seen: {site}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS client that trusts only pebble's issuing root.
fn trusting(pebble: &Pebble) -> TlsConnector {
    trusting_roots(&[&pebble.issuing_root])
}

/// A TLS client that trusts only the PEM `roots`.
fn trusting_roots(pems: &[&str]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The leaf certificate a verified handshake for [`HOST`] gets at `addr`.
async fn served_leaf(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    leaf_for(connector, addr, HOST).await
}

/// The leaf certificate a verified handshake for `name` gets at `addr`.
async fn leaf_for(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let tls = connector.connect(server_name, tcp).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// An HTTPS GET of `/` on [`HOST`], verified against pebble's root.
async fn https_get(pebble: &Pebble, gatehouse: &Gatehouse) -> reqwest::Response {
    https_get_at(pebble, gatehouse.tls_addr(), HOST).await
}

/// An HTTPS GET of `/` on `name` at `addr`, verified against pebble's root.
async fn https_get_at(pebble: &Pebble, addr: SocketAddr, name: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(pebble.issuing_root.as_bytes()).unwrap()])
        .resolve(name, addr)
        .build()
        .unwrap()
        .get(format!("https://{name}:{}/", addr.port()))
        .send()
        .await
        .expect("HTTPS with the ACME certificate")
}

/// Orders pebble has been asked for.
fn orders(pebble: &Pebble) -> usize {
    pebble.log().matches("POST /order-plz").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_certificate_serves_https_and_a_restart_places_no_new_order() {
    let upstream = Upstream::start("app").await;
    let (plain, tls) = (free_port(), free_port());
    let pebble = Pebble::start(plain, tls, None).await;
    let started = Instant::now();
    let exported = tempfile::tempdir().unwrap();
    let config = auto_site(&pebble, &["http-01"], plain, tls, &upstream).replace(
        "retry_after",
        &format!(
            "export_dir = \"{}\"\nretry_after",
            exported.path().display()
        ),
    );
    let mut gatehouse = Gatehouse::start(&config);
    let first = certified(&gatehouse).await;
    eprintln!(
        "MEASURE first certificate over HTTP-01 after {:?}",
        started.elapsed()
    );
    assert_eq!(first["failures"], 0);
    let answer = https_get(&pebble, &gatehouse).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(upstream.hits(), 1, "the HTTPS request reached the upstream");
    let leaf = served_leaf(&trusting(&pebble), gatehouse.tls_addr())
        .await
        .unwrap();
    // Exported for other tools: the chain as served, the key readable by its owner only.
    let chain = std::fs::read(exported.path().join(format!("{HOST}.crt"))).unwrap();
    let exported_leaf = CertificateDer::pem_slice_iter(&chain)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(exported_leaf.as_ref(), leaf.as_slice());
    let key = std::fs::metadata(exported.path().join(format!("{HOST}.key"))).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let ordered = orders(&pebble);
    assert_eq!(ordered, 1, "one order:\n{}", pebble.log());

    gatehouse.stop();
    gatehouse.start_again().await;
    // Served at once from the state store: the same certificate, and pebble saw no new order.
    let again = site(&gatehouse).await;
    assert_eq!(again["certificate"], "valid");
    assert_eq!(again["issued_at"], first["issued_at"]);
    let leaf_again = served_leaf(&trusting(&pebble), gatehouse.tls_addr())
        .await
        .unwrap();
    assert_eq!(leaf_again, leaf);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orders(&pebble), ordered, "no new order after a restart");
    assert_eq!(https_get(&pebble, &gatehouse).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_certificate_renews_under_concurrent_handshakes() {
    let upstream = Upstream::start("app").await;
    let (plain, tls) = (free_port(), free_port());
    // Twelve-second certificates: renewal is due eight seconds in.
    let pebble = Pebble::start(plain, tls, Some(12)).await;
    let started = Instant::now();
    let gatehouse = Gatehouse::start(&auto_site(&pebble, &["tls-alpn-01"], plain, tls, &upstream));
    let first = certified(&gatehouse).await;
    eprintln!(
        "MEASURE first certificate over TLS-ALPN-01 after {:?}",
        started.elapsed()
    );
    assert_eq!(https_get(&pebble, &gatehouse).await.status(), 200);
    let connector = trusting(&pebble);
    let addr = gatehouse.tls_addr();
    let leaf = served_leaf(&connector, addr).await.unwrap();

    // Handshakes without pause from four clients while the certificate is swapped.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<JoinHandle<()>> = (0..4)
        .map(|_| {
            let (connector, stop, done, failed) = (
                connector.clone(),
                Arc::clone(&stop),
                Arc::clone(&done),
                Arc::clone(&failed),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match served_leaf(&connector, addr).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "a renewed certificate served",
        || async {
            served_leaf(&connector, addr)
                .await
                .is_ok_and(|served| served != leaf)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let renewed = site(&gatehouse).await;
    assert_ne!(renewed["not_after"], first["not_after"]);
    assert_eq!(renewed["certificate"], "valid");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "handshakes failed during the swap"
    );
    assert!(
        done.load(Ordering::Relaxed) > 20,
        "too few handshakes to tell"
    );
}

/// Forwards TCP connections from a loopback port to `to` while it runs: pebble's HTTP-01
/// validations reach gatehouse through it, and stop reaching it when it is stopped.
struct Forwarder {
    port: u16,
    to: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    async fn start(port: u16, to: SocketAddr) -> Self {
        let mut forwarder = Self {
            port,
            to,
            task: None,
        };
        forwarder.resume().await;
        forwarder
    }

    async fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let to = self.to;
        self.task = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Closes the port: validations are refused.
    async fn pause(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// An HTTP-01 site with certificates of `validity` seconds, certified, whose validations
/// reach it through a [`Forwarder`] the test can pause.
struct ForwardedSite {
    _upstream: Upstream,
    pebble: Pebble,
    forwarder: Forwarder,
    gatehouse: Gatehouse,
}

async fn forwarded_site(validity: u64) -> ForwardedSite {
    let upstream = Upstream::start("app").await;
    let (plain, tls, validation) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(validation, tls, Some(validity)).await;
    let forwarder =
        Forwarder::start(validation, format!("127.0.0.1:{plain}").parse().unwrap()).await;
    let gatehouse = Gatehouse::start(&auto_site(&pebble, &["http-01"], plain, tls, &upstream));
    certified(&gatehouse).await;
    ForwardedSite {
        _upstream: upstream,
        pebble,
        forwarder,
        gatehouse,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_renewal_keeps_the_old_certificate_alerts_and_a_retry_succeeds() {
    // Fifteen-second certificates: renewal is due ten seconds in.
    let ForwardedSite {
        _upstream,
        pebble,
        mut forwarder,
        gatehouse,
    } = forwarded_site(15).await;
    let connector = trusting(&pebble);
    let addr = gatehouse.tls_addr();
    let leaf = served_leaf(&connector, addr).await.unwrap();

    forwarder.pause().await;
    eventually(
        Duration::from_secs(30),
        "renewal failing in /healthz",
        || async { site(&gatehouse).await["failures"].as_u64() > Some(0) },
    )
    .await;
    let report = get_json(gatehouse.admin_url("/healthz")).await;
    let check = &report["checks"]["tls"];
    assert_eq!(check["status"], "degraded");
    let error = check["error"].as_str().unwrap();
    assert!(
        error.contains(HOST) && error.contains("validation failed"),
        "{error}"
    );
    // The CA's own words: pebble could not connect to the validation port.
    assert!(error.contains("connect"), "{error}");
    let alerts = gatehouse.admin_json("/api/v1/alerts").await;
    let firing = alerts["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["rule"] == format!("certificate:{HOST}") && event["state"] == "firing")
        .unwrap_or_else(|| panic!("no certificate alert in {alerts}"));
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .contains("validation failed")
    );
    // The old certificate still serves while it is valid.
    assert_eq!(served_leaf(&connector, addr).await.unwrap(), leaf);

    forwarder.resume().await;
    eventually(Duration::from_secs(30), "a retry that succeeds", || async {
        let site = site(&gatehouse).await;
        site["failures"] == 0 && site["certificate"] == "valid"
    })
    .await;
    assert_ne!(served_leaf(&connector, addr).await.unwrap(), leaf);
    let report = get_json(gatehouse.admin_url("/healthz")).await;
    assert_eq!(report["checks"]["tls"]["status"], "ok");
    let alerts = gatehouse.admin_json("/api/v1/alerts").await;
    assert!(
        alerts["history"].as_array().unwrap().iter().any(|event| {
            event["rule"] == format!("certificate:{HOST}") && event["state"] == "resolved"
        }),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_about_to_expire_shows_in_healthz_and_on_the_overview() {
    // Thirty-six-second certificates: renewal is due 24 s in; with renewals failing, the
    // certificate is expiring (a sixth of its lifetime left) from 30 s to 36 s.
    let ForwardedSite {
        _upstream,
        pebble: _pebble,
        mut forwarder,
        gatehouse,
    } = forwarded_site(36).await;
    forwarder.pause().await;
    let browser = Browser::logged_in(&gatehouse, 1280).await;
    certificate_becomes(&gatehouse, "expiring", Duration::from_secs(45)).await;
    let report = get_json(gatehouse.admin_url("/healthz")).await;
    let check = &report["checks"]["tls"];
    assert_eq!(check["status"], "degraded");
    let error = check["error"].as_str().unwrap();
    assert!(error.contains("certificate expires in"), "{error}");
    let status = browser
        .text_containing("[data-testid=\"status\"]", "expiring")
        .await;
    assert!(
        status.contains(HOST) && status.contains("certificate expires in"),
        "{status}"
    );
    browser.screenshot("certificate-expiring").await;
    browser.close().await;
}

/// What an on-demand test runs against: an upstream, an ask endpoint, pebble, the TLS port,
/// and a file certificate for [`MANUAL`] from a test CA.
struct OnDemand {
    upstream: Upstream,
    ask: Upstream,
    pebble: Pebble,
    tls: u16,
    ca: TestCa,
    manual: (std::path::PathBuf, std::path::PathBuf, Vec<u8>),
    _dir: tempfile::TempDir,
}

impl OnDemand {
    async fn start() -> Self {
        let tls = free_port();
        let (ca, dir) = (TestCa::new(), tempfile::tempdir().unwrap());
        let manual = ca.issue_for(dir.path(), "manual", &[MANUAL]);
        Self {
            upstream: Upstream::start("app").await,
            ask: Upstream::start("ask").await,
            pebble: Pebble::start(free_port(), tls, None).await,
            tls,
            ca,
            manual,
            _dir: dir,
        }
    }

    /// A gatehouse with no default certificate, the file certificate for [`MANUAL`], and
    /// certificates obtained on demand for other names under `shop.gatehouse.test`; the ask
    /// endpoint answers `ask_status`; at most `max_orders` an hour.
    fn config(&self, ask_status: u16, max_orders: u32) -> String {
        let (cert, key, _) = &self.manual;
        format!(
            "[edge]\nlisten = [\"127.0.0.1:{}\"]\n\n[edge.tls]\nlisten = [\"127.0.0.1:{}\"]\n\n\
             [[edge.tls.sites]]\nhosts = [\"{MANUAL}\"]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [edge.tls.on_demand]\nallow = [\"*.shop.gatehouse.test\"]\n\
             ask = \"http://{}/status/{ask_status}\"\nmax_orders = {max_orders}\n\n\
             [edge.tls.acme]\n{}retry_after = \"1s\"\n\n[upstreams.app]\nservers = [\"{}\"]\n",
            free_port(),
            self.tls,
            cert.display(),
            key.display(),
            self.ask.addr,
            self.pebble.acme_config(&["tls-alpn-01"]),
            self.upstream.addr,
        )
    }
}

/// A name under the on-demand domain that has a certificate from files.
const MANUAL: &str = "manual.shop.gatehouse.test";

#[tokio::test(flavor = "multi_thread")]
async fn on_demand_names_get_a_certificate_at_their_first_handshake() {
    let on_demand = OnDemand::start().await;
    let OnDemand {
        ask,
        pebble,
        ca,
        manual,
        ..
    } = &on_demand;
    let config = on_demand.config(200, 2);
    let mut gatehouse = Gatehouse::start(&config);
    let connector = trusting_roots(&[&pebble.issuing_root, &ca.pem]);
    let addr = gatehouse.tls_addr();

    // A name with a certificate from files keeps it: nothing is asked or ordered for it.
    let served = leaf_for(&connector, addr, MANUAL).await.unwrap();
    assert_eq!(served, manual.2);
    assert_eq!((orders(pebble), ask.hits()), (0, 0));

    // The first handshake waits for its certificate and validates against pebble's root.
    let started = Instant::now();
    let first = leaf_for(&connector, addr, "a.shop.gatehouse.test")
        .await
        .expect("the first handshake gets a certificate");
    eprintln!(
        "MEASURE first handshake with an on-demand certificate took {:?}",
        started.elapsed()
    );
    assert_eq!((orders(pebble), ask.hits()), (1, 1));
    let answer = https_get_at(pebble, addr, "a.shop.gatehouse.test").await;
    assert_eq!(answer.status(), 200);

    // Concurrent first handshakes for one name wait for one order.
    let handshakes: Vec<_> = (0..4)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move { leaf_for(&connector, addr, "b.shop.gatehouse.test").await })
        })
        .collect();
    for handshake in handshakes {
        handshake
            .await
            .unwrap()
            .expect("every concurrent handshake gets it");
    }
    assert_eq!(orders(pebble), 2, "one order for four handshakes");

    // Beyond the budget, an unlisted name, and a name the ask URL is not asked about: no
    // certificate (and no default to fall back on), no order.
    for name in [
        "c.shop.gatehouse.test",
        "shop.gatehouse.test",
        "evil.gatehouse.test",
    ] {
        assert!(
            leaf_for(&connector, addr, name).await.is_err(),
            "{name} must get no certificate"
        );
    }
    assert_eq!(
        orders(pebble),
        2,
        "no order past the budget or for unlisted names"
    );
    assert_eq!(ask.hits(), 3, "unlisted names are not asked about");

    // Each name is kept like a site, in /healthz, and served again after a restart.
    let report = get_json(gatehouse.admin_url("/healthz")).await;
    let sites = report["checks"]["tls"]["detail"]["sites"].to_string();
    assert!(
        sites.contains("a.shop.gatehouse.test") && sites.contains("b.shop.gatehouse.test"),
        "{sites}"
    );
    gatehouse.stop();
    gatehouse.start_again().await;
    let again = leaf_for(&connector, gatehouse.tls_addr(), "a.shop.gatehouse.test")
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "the stored certificate serves after a restart"
    );
    assert_eq!(orders(pebble), 2, "no new order after a restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_the_ask_url_refuses_gets_no_certificate_and_is_not_asked_again_at_once() {
    let on_demand = OnDemand::start().await;
    let OnDemand { ask, pebble, .. } = &on_demand;
    let gatehouse = Gatehouse::start(&on_demand.config(403, 10));
    let (connector, addr) = (trusting(pebble), gatehouse.tls_addr());
    for _ in 0..3 {
        assert!(
            leaf_for(&connector, addr, "a.shop.gatehouse.test")
                .await
                .is_err()
        );
    }
    assert_eq!(ask.hits(), 1, "the refusal is remembered");
    assert_eq!(orders(pebble), 0);
}
