//! Health: liveness (`/health`), a detailed report (`/healthz`) and readiness (`/readyz`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::acme::SiteReport;
use crate::edge::EdgeState;
use crate::edge::tls::CertResolver;
use crate::pool::health::Probe;
use crate::store::{Store, StoreReport};
use crate::upstream::GroupStatus;

/// Overall verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything works.
    Ok,
    /// Serving, with something to look at (a server down, a group empty).
    Degraded,
    /// Cannot serve properly.
    Down,
}

/// The addresses gatehouse listens on.
#[derive(Debug, Clone, Serialize)]
pub struct BoundAddrs {
    /// Plain HTTP edge listeners.
    pub edge: Vec<SocketAddr>,
    /// TLS edge listeners.
    pub tls: Vec<SocketAddr>,
    /// HTTP → HTTPS redirect listeners.
    pub redirect: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The pooler's listeners (none when it is off).
    pub pool: Vec<SocketAddr>,
}

/// What the health endpoints look at.
pub struct HealthSources {
    pub(crate) edge: Arc<EdgeState>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) tls: Option<Arc<CertResolver>>,
    pub(crate) addrs: BoundAddrs,
    pub(crate) started: Instant,
}

/// The `/healthz` document.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Worst of the checks.
    pub status: Status,
    /// Gatehouse version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Each subsystem.
    pub checks: Checks,
}

/// One entry per subsystem.
#[derive(Debug, Serialize)]
pub struct Checks {
    /// Listeners are bound (they are, once serving).
    pub listeners: Check<BoundAddrs>,
    /// The state store answers a write and a read.
    pub store: Check<Option<StoreReport>>,
    /// Upstream groups and their servers.
    pub upstreams: Check<BTreeMap<String, GroupStatus>>,
    /// The TLS certificates, when TLS is on: degraded while an ACME site's certificate is
    /// missing, expiring or failing to renew.
    pub tls: Option<Check<TlsDetail>>,
    /// The shared cache tier, when Redis is enabled.
    pub redis: Option<Check<RedisDetail>>,
    /// The pooler's databases (gatehouse's own probe of each), when the pooler runs.
    pub databases: Option<Check<BTreeMap<String, Probe>>>,
    /// The OTLP trace exporter, when traces are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traces: Option<Check<TracesDetail>>,
}

/// A subsystem's verdict with its details.
#[derive(Debug, Serialize)]
pub struct Check<T> {
    /// Verdict.
    pub status: Status,
    /// Why, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the subsystem reports.
    pub detail: T,
}

impl<T> Check<T> {
    /// Ok without problems; otherwise `bad`, with the problems as the error.
    fn judged(problems: &[String], bad: Status, detail: T) -> Self {
        Self {
            status: if problems.is_empty() { Status::Ok } else { bad },
            error: (!problems.is_empty()).then(|| problems.join("; ")),
            detail,
        }
    }
}

/// The shared cache tier's connection.
#[derive(Debug, Serialize)]
pub struct RedisDetail {
    /// Whether Redis is reachable now.
    pub connected: bool,
}

/// The trace exporter's counts since start.
#[derive(Debug, Serialize)]
pub struct TracesDetail {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Exports that failed.
    pub failed_exports: u64,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
}

/// What `/readyz` says.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether to send traffic here.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What works less well than it could, while ready (a shared tier that is down).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

/// Why the shared tier's check is not ok.
const REDIS_DOWN: &str = "Redis is unreachable: the cache answers from its local tiers only, \
     and shared rate limits do as rate_limits.when_redis_down says";

/// Why the trace exporter's check is not ok.
const TRACES_FAILING: &str = "the OTLP collector refused or did not answer the last export: \
     spans are being dropped (requests are not held)";

/// The certificates being served.
#[derive(Debug, Serialize)]
pub struct TlsDetail {
    /// Distinct certificates served (the default and the sites').
    pub certificates: usize,
    /// The `tls = "auto"` sites and their certificates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteReport>,
}

impl HealthSources {
    /// The full report.
    pub fn report(&self) -> Report {
        let store = match self.store.probe() {
            Ok(report) => Check {
                status: Status::Ok,
                error: None,
                detail: Some(report),
            },
            Err(err) => Check {
                status: Status::Down,
                error: Some(err.to_string()),
                detail: None,
            },
        };
        let runtime = self.edge.runtime();
        let groups: BTreeMap<String, GroupStatus> = runtime
            .groups
            .iter()
            .map(|(name, group)| (name.clone(), group.status()))
            .collect();
        let upstreams = upstream_check(groups);
        let tls = self.tls.as_ref().map(|resolver| {
            let sites = self
                .edge
                .acme()
                .map(|acme| acme.report())
                .unwrap_or_default();
            let troubles: Vec<String> = sites.iter().filter_map(SiteReport::trouble).collect();
            let detail = TlsDetail {
                certificates: resolver.served(),
                sites,
            };
            Check::judged(&troubles, Status::Degraded, detail)
        });
        let listeners = Check {
            status: Status::Ok,
            error: None,
            detail: self.addrs.clone(),
        };
        let redis = self.edge.redis_status().map(|connected| Check {
            status: if connected {
                Status::Ok
            } else {
                Status::Degraded
            },
            error: (!connected).then(|| REDIS_DOWN.to_string()),
            detail: RedisDetail { connected },
        });
        let databases = self.edge.pooler().map(|pooler| {
            let probes = pooler.databases();
            let down = unreachable_databases(&probes);
            Check::judged(&down, Status::Down, probes)
        });
        let traces = self.edge.traces().map(|traces| {
            let counters = traces.counters();
            let failing = counters.last_failed.load(Ordering::Relaxed);
            Check {
                status: if failing {
                    Status::Degraded
                } else {
                    Status::Ok
                },
                error: failing.then(|| TRACES_FAILING.to_string()),
                detail: TracesDetail {
                    exported: counters.exported.load(Ordering::Relaxed),
                    failed_exports: counters.failed_exports.load(Ordering::Relaxed),
                    dropped: counters.dropped.load(Ordering::Relaxed),
                },
            }
        });
        let status = [
            Some(listeners.status),
            Some(store.status),
            Some(upstreams.status),
            tls.as_ref().map(|t| t.status),
            redis.as_ref().map(|r| r.status),
            databases.as_ref().map(|d| d.status),
            traces.as_ref().map(|t| t.status),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|s| *s as u8)
        .unwrap_or(Status::Ok);
        Report {
            status,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            checks: Checks {
                listeners,
                store,
                upstreams,
                tls,
                redis,
                databases,
                traces,
            },
        }
    }

    /// Ready when the listeners are bound, the store works and at least one upstream server can
    /// take traffic; a shared cache tier that is down degrades it without making it unready.
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if let Err(err) = self.store.probe() {
            reasons.push(format!("state store: {err}"));
        }
        let runtime = self.edge.runtime();
        if !runtime.groups.is_empty() && !runtime.groups.values().any(|g| g.any_available()) {
            reasons.push("no upstream server is available".to_string());
        }
        if let Some(pooler) = self.edge.pooler() {
            reasons.extend(unreachable_databases(&pooler.databases()));
        }
        let mut degraded = Vec::new();
        if self.edge.redis_status() == Some(false) {
            degraded.push(REDIS_DOWN.to_string());
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            degraded,
        }
    }
}

/// `database NAME: why` for each database the last probe could not reach.
fn unreachable_databases(probes: &BTreeMap<String, Probe>) -> Vec<String> {
    probes
        .iter()
        .filter(|(_, probe)| probe.status == "down")
        .map(|(name, probe)| {
            format!(
                "database {name}: {}",
                probe.error.as_deref().unwrap_or("unreachable")
            )
        })
        .collect()
}

/// Down when no server of any group is available; degraded when some server or group is out.
fn upstream_check(groups: BTreeMap<String, GroupStatus>) -> Check<BTreeMap<String, GroupStatus>> {
    let total: usize = groups.values().map(|g| g.servers.len()).sum();
    let available: usize = groups.values().map(|g| g.available).sum();
    let (status, error) = if total > 0 && available == 0 {
        (
            Status::Down,
            Some("no upstream server is available".to_string()),
        )
    } else if available < total {
        let out: Vec<String> = groups
            .iter()
            .flat_map(|(name, g)| {
                g.servers
                    .iter()
                    .filter(|s| !s.available)
                    .map(move |s| format!("{name}/{}", s.addr))
            })
            .collect();
        (
            Status::Degraded,
            Some(format!("out of rotation: {}", out.join(", "))),
        )
    } else {
        (Status::Ok, None)
    };
    Check {
        status,
        error,
        detail: groups,
    }
}
