//! Automatic HTTPS: certificates for the `tls = "auto"` sites, obtained over ACME (RFC 8555)
//! with instant-acme, kept in the state store and swapped into the TLS resolver without a
//! restart or a dropped connection.
//!
//! One task per site keeps its certificate: it renews two thirds into the lifetime, or earlier
//! when the CA's renewal info (ARI, RFC 9773) says so; after a failure it retries with a
//! doubling pause while the old certificate keeps serving, logs the CA's words and raises an
//! alert. A certificate in the store is used at start: a restart places no new order.
//!
//! Names no site lists can get a certificate at their first handshake ([`on_demand`]); each is
//! then kept like a site's.

mod challenges;
mod issue;
mod on_demand;
mod renewal;
mod stored;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{Account, CertificateIdentifier, NewAccount};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{error, info, warn};

pub use challenges::{ACME_TLS_ALPN, Challenges, HTTP01_PREFIX};

use crate::config::{AcmeConfig, AlertSeverity, TlsConfig};
use crate::edge::tls::CertResolver;
use crate::monitor::alerts::{Alerts, rfc3339};
use crate::store::Store;
use on_demand::{OnDemand, Order};
use stored::{StoredCertificate, Usable};

/// Longest time one order may take, from the new-order request to the chain.
const ORDER_DEADLINE: Duration = Duration::from_secs(300);
/// Longest wait for the CA's renewal info (otherwise the usual schedule holds).
const ARI_DEADLINE: Duration = Duration::from_secs(30);

/// The ACME sites and what they share: the account, the challenge answers, the store.
pub struct Acme {
    /// The configured sites, then the names obtained on demand.
    sites: Arc<Mutex<Vec<Arc<Site>>>>,
    shared: Arc<Shared>,
    on_demand: Option<Arc<OnDemand>>,
    /// On-demand orders, until [`Acme::spawn`] takes them.
    orders: Mutex<Option<UnboundedReceiver<Order>>>,
}

struct Shared {
    config: AcmeConfig,
    store: Arc<dyn Store>,
    resolver: Arc<CertResolver>,
    challenges: Arc<Challenges>,
    /// Made (or restored from the store) at the first order.
    account: tokio::sync::Mutex<Option<Account>>,
}

/// One site's certificate and how keeping it goes.
struct Site {
    hosts: Vec<String>,
    id: String,
    /// Its key in the store.
    record: String,
    state: Mutex<SiteState>,
}

#[derive(Default)]
struct SiteState {
    current: Option<Usable>,
    issued_at: Option<u64>,
    failures: u32,
    last_error: Option<String>,
    next_attempt: Option<SystemTime>,
    renew_at: Option<SystemTime>,
}

/// Where a site's certificate stands, for `/healthz`, the admin API and the UI.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// The names the certificate covers.
    pub hosts: Vec<String>,
    /// `valid`, `expiring` (less than a sixth of its lifetime left), `expired` or `missing`.
    pub certificate: &'static str,
    /// The certificate's end of validity (RFC 3339).
    pub not_after: Option<String>,
    /// Seconds until then (negative once past).
    pub expires_in_seconds: Option<i64>,
    /// When it was obtained (RFC 3339).
    pub issued_at: Option<String>,
    /// When renewal is due (RFC 3339).
    pub renew_at: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure, in the CA's words where it gave any.
    pub last_error: Option<String>,
    /// When the next attempt is due after a failure (RFC 3339).
    pub next_attempt: Option<String>,
}

impl SiteReport {
    /// What needs someone's attention, if anything: no usable certificate, one about to
    /// expire, or renewal failing (with the CA's words).
    pub fn trouble(&self) -> Option<String> {
        let site = self.hosts.join(",");
        let expiry = match (self.certificate, self.expires_in_seconds) {
            ("valid", _) => None,
            ("expiring", Some(left)) => Some(format!(
                "certificate expires in {}",
                humantime::format_duration(Duration::from_secs(left.max(0) as u64))
            )),
            (state, _) => Some(format!("certificate {state}")),
        };
        let failing = self
            .last_error
            .as_ref()
            .map(|why| format!("{} failed attempt(s), last: {why}", self.failures));
        match (expiry, failing) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(format!("{site}: {one}")),
            (Some(expiry), Some(failing)) => Some(format!("{site}: {expiry}; {failing}")),
        }
    }
}

impl Acme {
    /// The ACME sites of `tls` and its on-demand names, each with the certificate the store
    /// holds for it already put in `resolver`. None when nothing comes over ACME.
    pub fn new(
        tls: &TlsConfig,
        store: Arc<dyn Store>,
        resolver: Arc<CertResolver>,
    ) -> Option<Self> {
        if !tls.uses_acme() {
            return None;
        }
        let shared = Arc::new(Shared {
            config: tls.acme.clone(),
            challenges: resolver.challenges(),
            store,
            resolver,
            account: tokio::sync::Mutex::new(None),
        });
        let mut sites: Vec<Arc<Site>> = tls
            .auto_sites()
            .map(|site| {
                Arc::new(Site::restore(
                    site.hosts.clone(),
                    stored::site_key(&site.id()),
                    &shared,
                ))
            })
            .collect();
        let (on_demand, orders) = match &tls.on_demand {
            Some(config) => {
                let (on_demand, orders) = OnDemand::new(config, tls.acme.retry_after);
                sites.extend(restore_on_demand(&on_demand, &shared));
                (Some(Arc::new(on_demand)), Some(orders))
            }
            None => (None, None),
        };
        Some(Self {
            sites: Arc::new(Mutex::new(sites)),
            shared,
            on_demand,
            orders: Mutex::new(orders),
        })
    }

    /// Starts keeping every site's certificate, and taking on-demand orders (call on the
    /// serving thread's runtime).
    pub fn spawn(&self, alerts: &Arc<Alerts>) {
        for site in lock(&self.sites).iter() {
            keep(site, &self.shared, alerts);
        }
        let (Some(on_demand), Some(mut orders)) = (&self.on_demand, lock(&self.orders).take())
        else {
            return;
        };
        let (sites, shared, on_demand, alerts) = (
            Arc::clone(&self.sites),
            Arc::clone(&self.shared),
            Arc::clone(on_demand),
            Arc::clone(alerts),
        );
        actix_rt::spawn(async move {
            while let Some(order) = orders.recv().await {
                let fill = fill(
                    order,
                    Arc::clone(&sites),
                    Arc::clone(&shared),
                    Arc::clone(&on_demand),
                    Arc::clone(&alerts),
                );
                actix_rt::spawn(fill);
            }
        });
    }

    /// For a handshake naming `name`: when no certificate is made for it and it may get one
    /// on demand, waits while it is obtained.
    pub async fn certificate_on_demand(&self, name: &str) {
        let Some(on_demand) = &self.on_demand else {
            return;
        };
        if self.shared.resolver.covers(name) {
            return;
        }
        on_demand.wait_for(&name.to_ascii_lowercase()).await;
    }

    /// Whether names can get certificates on demand (handshakes are then looked at first).
    pub fn on_demand(&self) -> bool {
        self.on_demand.is_some()
    }

    /// The challenge answers the listeners serve.
    pub fn challenges(&self) -> &Challenges {
        &self.shared.challenges
    }

    /// Each site's certificate and renewal.
    pub fn report(&self) -> Vec<SiteReport> {
        let now = SystemTime::now();
        lock(&self.sites)
            .iter()
            .map(|site| site.report(now))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Obtains the certificate of an on-demand order; once it is in use, keeps it like a site's.
async fn fill(
    order: Order,
    sites: Arc<Mutex<Vec<Arc<Site>>>>,
    shared: Arc<Shared>,
    on_demand: Arc<OnDemand>,
    alerts: Arc<Alerts>,
) {
    let record = stored::on_demand_key(&order.name);
    let site = Arc::new(Site::new(vec![order.name.clone()], record));
    let obtained = site.obtain_in_time(&shared).await;
    match &obtained {
        Ok(()) => {
            lock(&sites).push(Arc::clone(&site));
            keep(&site, &shared, &alerts);
        }
        Err(why) => warn!(name = %order.name, "cannot obtain a certificate on demand: {why}"),
    }
    on_demand.finished(&order.name, obtained.is_ok());
    let _ = order.done.send(true);
}

/// Keeps `site`'s certificate renewed, for ever.
fn keep(site: &Arc<Site>, shared: &Arc<Shared>, alerts: &Arc<Alerts>) {
    let (site, shared, alerts) = (Arc::clone(site), Arc::clone(shared), Arc::clone(alerts));
    actix_rt::spawn(async move { site.keep(&shared, &alerts).await });
}

/// The names obtained on demand before, still listed, whose certificates are still valid (an
/// expired one waits for its next handshake, as a new name would).
fn restore_on_demand(on_demand: &OnDemand, shared: &Shared) -> Vec<Arc<Site>> {
    let names = stored::on_demand_names(shared.store.as_ref()).unwrap_or_else(|err| {
        warn!(error = %err, "cannot read the certificates obtained on demand");
        Vec::new()
    });
    names
        .into_iter()
        .filter(|name| on_demand.listed(name))
        .map(|name| {
            let record = stored::on_demand_key(&name);
            Site::restore(vec![name], record, shared)
        })
        .filter(|site| site.lock().current.is_some())
        .map(Arc::new)
        .collect()
}

impl Site {
    fn new(hosts: Vec<String>, record: String) -> Self {
        Self {
            id: hosts.join(","),
            hosts,
            record,
            state: Mutex::default(),
        }
    }

    /// The site, serving the certificate kept in the store under `record` if it is still valid.
    fn restore(hosts: Vec<String>, record: String, shared: &Shared) -> Self {
        let site = Self::new(hosts, record);
        match stored::load(shared.store.as_ref(), &site.record) {
            Ok(Some(record)) => match record.usable() {
                Ok(usable) if usable.not_after > SystemTime::now() => {
                    info!(site = %site.id, not_after = %rfc3339(usable.not_after), "certificate restored from the state store");
                    site.install(shared, usable, record.issued_at);
                }
                Ok(_) => {
                    info!(site = %site.id, "the stored certificate has expired; a new one is needed")
                }
                Err(why) => {
                    warn!(site = %site.id, %why, "the stored certificate cannot be used; a new one is needed")
                }
            },
            Ok(None) => {}
            Err(err) => warn!(site = %site.id, error = %err, "cannot read the certificate store"),
        }
        site
    }

    fn install(&self, shared: &Shared, usable: Usable, issued_at: u64) {
        shared.resolver.install(&self.hosts, &usable.certified);
        let mut state = self.lock();
        state.renew_at = Some(renewal::two_thirds(usable.not_before, usable.not_after));
        state.current = Some(usable);
        state.issued_at = Some(issued_at);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SiteState> {
        lock(&self.state)
    }

    /// Renews when due, for ever.
    async fn keep(&self, shared: &Shared, alerts: &Alerts) {
        loop {
            let (wait, renew) = self.next_step(shared).await;
            tokio::time::sleep(wait).await;
            if !renew {
                continue;
            }
            match self.obtain_in_time(shared).await {
                Ok(()) => {
                    if self.succeeded() {
                        let summary = format!("certificate for {} obtained", self.id);
                        alerts.raise(
                            &self.alert_name(),
                            AlertSeverity::Warning,
                            "resolved",
                            summary,
                        );
                    }
                }
                Err(why) => {
                    let (failures, pause, serving) = self.failed(shared.config.retry_after, &why);
                    error!(site = %self.id, failures, retry_in = ?pause, serving_previous = serving,
                        "cannot obtain a certificate: {why}");
                    if failures == 1 {
                        // Critical once nothing valid is left to serve.
                        let severity = match serving {
                            true => AlertSeverity::Warning,
                            false => AlertSeverity::Critical,
                        };
                        let summary =
                            format!("certificate for {} cannot be obtained: {why}", self.id);
                        alerts.raise(&self.alert_name(), severity, "firing", summary);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Clears the failure record; whether there was one (an alert to resolve).
    fn succeeded(&self) -> bool {
        let mut state = self.lock();
        state.last_error = None;
        state.next_attempt = None;
        std::mem::take(&mut state.failures) > 0
    }

    /// Records a failure; the failures in a row, the pause before the next attempt, and
    /// whether a certificate is still being served meanwhile.
    fn failed(&self, first_pause: Duration, why: &str) -> (u32, Duration, bool) {
        let mut state = self.lock();
        state.failures += 1;
        let pause = renewal::backoff(first_pause, state.failures);
        state.next_attempt = Some(SystemTime::now() + pause);
        state.last_error = Some(why.to_string());
        let serving = state
            .current
            .as_ref()
            .is_some_and(|c| c.not_after > SystemTime::now());
        (state.failures, pause, serving)
    }

    fn alert_name(&self) -> String {
        format!("certificate:{}", self.id)
    }

    /// How long to wait, and whether to renew then (or only look again: the CA's renewal
    /// window is asked again from time to time).
    async fn next_step(&self, shared: &Shared) -> (Duration, bool) {
        let now = SystemTime::now();
        let (due, leaf) = {
            let state = self.lock();
            let Some(current) = &state.current else {
                return (Duration::ZERO, true);
            };
            (
                renewal::two_thirds(current.not_before, current.not_after),
                current.certified.cert[0].clone(),
            )
        };
        let asked = tokio::time::timeout(ARI_DEADLINE, shared.renewal_window(&leaf));
        let (due, recheck) = match asked.await.ok().flatten() {
            Some((suggested, recheck)) => (due.min(suggested), Some(recheck)),
            None => (due, None),
        };
        self.lock().renew_at = Some(due);
        let until_due = due.duration_since(now).unwrap_or_default();
        match recheck {
            Some(recheck) if recheck < until_due => (recheck, false),
            _ => (until_due, true),
        }
    }

    /// [`Site::obtain`], within the order deadline: a CA that stops answering mid-order must
    /// not stall the site for good.
    async fn obtain_in_time(&self, shared: &Shared) -> Result<(), String> {
        let attempt = tokio::time::timeout(ORDER_DEADLINE, self.obtain(shared));
        attempt.await.unwrap_or_else(|_| {
            Err(format!(
                "the CA did not finish the order within {ORDER_DEADLINE:?}"
            ))
        })
    }

    /// Orders a certificate, keeps it, exports it if asked and swaps it in.
    async fn obtain(&self, shared: &Shared) -> Result<(), String> {
        let account = shared.account().await?;
        let replaces = self.lock().current.as_ref().and_then(|c| {
            CertificateIdentifier::try_from(&c.certified.cert[0])
                .ok()
                .map(CertificateIdentifier::into_owned)
        });
        info!(site = %self.id, renewal = replaces.is_some(), "ordering a certificate");
        let started = std::time::Instant::now();
        // A CA without renewal info refuses `replaces`; the order is then placed without it.
        let issued = match issue::issue(
            &account,
            &self.hosts,
            &shared.config.challenges,
            &shared.challenges,
            replaces,
        )
        .await
        {
            Err(issue::IssueError::Acme(instant_acme::Error::Unsupported(_))) => {
                issue::issue(
                    &account,
                    &self.hosts,
                    &shared.config.challenges,
                    &shared.challenges,
                    None,
                )
                .await
            }
            other => other,
        }
        .map_err(|err| explain(&err))?;
        let record = StoredCertificate {
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            directory: shared.config.directory_url().to_string(),
            issued_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        let usable = record
            .usable()
            .map_err(|why| format!("the CA's certificate cannot be used: {why}"))?;
        stored::save(shared.store.as_ref(), &self.record, &record)
            .map_err(|err| format!("cannot keep the certificate: {err}"))?;
        if let Some(dir) = &shared.config.export_dir
            && let Err(err) = stored::export(dir, &self.hosts[0], &record)
        {
            warn!(site = %self.id, dir = %dir.display(), error = %err, "cannot export the certificate as PEM files");
        }
        info!(site = %self.id, not_after = %rfc3339(usable.not_after), took = ?started.elapsed(), "certificate obtained and in use");
        self.install(shared, usable, record.issued_at);
        Ok(())
    }

    fn report(&self, now: SystemTime) -> SiteReport {
        let state = self.lock();
        let certificate = match &state.current {
            None => "missing",
            Some(c) if c.not_after <= now => "expired",
            Some(c) if renewal::expiring(c.not_before, c.not_after, now) => "expiring",
            Some(_) => "valid",
        };
        let not_after = state.current.as_ref().map(|c| c.not_after);
        SiteReport {
            hosts: self.hosts.clone(),
            certificate,
            not_after: not_after.map(rfc3339),
            expires_in_seconds: not_after.map(|end| match end.duration_since(now) {
                Ok(left) => left.as_secs() as i64,
                Err(past) => -(past.duration().as_secs() as i64),
            }),
            issued_at: state
                .issued_at
                .map(|s| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s))),
            renew_at: state.renew_at.map(rfc3339),
            failures: state.failures,
            last_error: state.last_error.clone(),
            next_attempt: state.next_attempt.map(rfc3339),
        }
    }
}

impl Shared {
    /// The account at the configured directory: restored from the store, or made there.
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(account) = &*slot {
            return Ok(account.clone());
        }
        let directory = self.config.directory_url();
        let builder = match &self.config.ca_root {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .map_err(|err| format!("cannot make an ACME client: {}", explain(&err)))?;
        let kept = stored::load_account(self.store.as_ref(), directory)
            .map_err(|err| format!("cannot read the ACME account: {err}"))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let account = match kept {
            Some(credentials) => builder.from_credentials(credentials).await.map_err(|err| {
                format!(
                    "cannot reach the ACME directory {directory}: {}",
                    explain(&err)
                )
            })?,
            None => {
                let contact = self
                    .config
                    .email
                    .as_ref()
                    .map(|email| format!("mailto:{email}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.to_string(),
                        None,
                    )
                    .await
                    .map_err(|err| {
                        format!("cannot make an account at {directory}: {}", explain(&err))
                    })?;
                let bytes = serde_json::to_vec(&credentials).expect("credentials serialize");
                stored::save_account(self.store.as_ref(), directory, &bytes)
                    .map_err(|err| format!("cannot keep the ACME account: {err}"))?;
                info!(%directory, id = account.id(), "ACME account made");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// The CA's suggested renewal time for the certificate `leaf` and when to ask again; none
    /// when the CA has no renewal info (or is not reachable now: the usual schedule holds).
    async fn renewal_window(
        &self,
        leaf: &rustls_pki_types::CertificateDer<'static>,
    ) -> Option<(SystemTime, Duration)> {
        let id = CertificateIdentifier::try_from(leaf).ok()?;
        let account = self.account().await.ok()?;
        let (info, retry_after) = account.renewal_info(&id).await.ok()?;
        let window = info.suggested_window;
        let spread: f64 = rand_fraction();
        let suggested = renewal::in_window(window.start.into(), window.end.into(), spread);
        let (least, most) = renewal::ARI_RECHECK;
        Some((suggested, retry_after.clamp(least, most)))
    }
}

/// An error with its causes: the HTTP client says only "client error (Connect)", and the
/// reason (a refused connection, an untrusted certificate) is further down the chain.
fn explain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = inner.source();
    }
    text
}

/// A fraction in [0, 1) from the OS's randomness.
fn rand_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says "client error (Connect)" and keeps the reason as its source, as hyper does.
    #[derive(Debug)]
    struct Vague(std::io::Error);

    impl std::fmt::Display for Vague {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Vague {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn explanations_carry_the_causes_once() {
        let refused =
            || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let vague = Vague(refused());
        assert_eq!(
            explain(&vague),
            "client error (Connect): connection refused"
        );
        // A wrapper that repeats its source's words does not repeat them twice.
        let transparent = instant_acme::Error::Other(Box::new(Vague(refused())));
        assert_eq!(
            explain(&transparent),
            "client error (Connect): connection refused"
        );
        assert!((0.0..1.0).contains(&rand_fraction()));
    }
}
