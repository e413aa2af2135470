//! State metrics, read when scraped: the edge (connections, requests in flight, upstream
//! servers, Redis), the cache, the policy plugins, this process and the host.

use std::fmt::{self, Debug, Formatter};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::edge::EdgeState;

/// The state of `edge` and of the process started at `started`, as a registry to render once.
pub fn registry(edge: Arc<EdgeState>, started: Instant) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Live { edge, started }));
    registry
}

struct Live {
    edge: Arc<EdgeState>,
    started: Instant,
}

impl Debug for Live {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("Live")
    }
}

/// Writes one metric family.
struct Writer<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Writer<'_> {
    fn gauge(&mut self, name: &str, help: &str, unit: Option<&Unit>, value: f64) -> fmt::Result {
        let gauge = ConstGauge::new(value);
        gauge.encode(
            self.encoder
                .encode_descriptor(name, help, unit, MetricType::Gauge)?,
        )
    }

    fn counter(&mut self, name: &str, help: &str, unit: Option<&Unit>, value: f64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        counter.encode(
            self.encoder
                .encode_descriptor(name, help, unit, MetricType::Counter)?,
        )
    }

    /// One family of `kind` with a value per label set.
    fn family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        kind: MetricType,
        values: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut family = self.encoder.encode_descriptor(name, help, unit, kind)?;
        for (labels, value) in values {
            let metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value).encode(metric)?,
                _ => ConstGauge::new(value).encode(metric)?,
            }
        }
        Ok(())
    }
}

impl Collector for Live {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut out = Writer { encoder };
        self.edge_state(&mut out)?;
        self.cache(&mut out)?;
        self.plugins(&mut out)?;
        if let Some(pooler) = self.edge.pooler() {
            pool(&mut out, pooler)?;
        }
        process(&mut out, self.started)?;
        host(&mut out)
    }
}

/// The PostgreSQL pooler: connections by state and what its pools have served.
fn pool(out: &mut Writer<'_>, pooler: &crate::pool::PoolerView) -> fmt::Result {
    let pools = pooler.pools();
    let labels =
        |p: &crate::pool::PoolFigures| [("database", p.database.clone()), ("user", p.user.clone())];
    out.gauge(
        "gatehouse_pool_client_connections",
        "Client connections to the pooler open now",
        None,
        pooler.clients() as f64,
    )?;
    let servers = pools.iter().flat_map(|p| {
        let [database, user] = labels(p);
        [
            (
                [
                    database.clone(),
                    user.clone(),
                    ("state", "active".to_string()),
                ],
                p.servers_active as f64,
            ),
            (
                [database, user, ("state", "idle".to_string())],
                p.servers_idle as f64,
            ),
        ]
    });
    out.family(
        "gatehouse_pool_server_connections",
        "Server connections by pool and state (active: serving a client)",
        None,
        MetricType::Gauge,
        servers.collect::<Vec<_>>(),
    )?;
    let each = |pick: fn(&crate::pool::PoolFigures) -> f64| {
        pools
            .iter()
            .map(|p| (labels(p), pick(p)))
            .collect::<Vec<_>>()
    };
    out.family(
        "gatehouse_pool_server_connections_max",
        "Server connections a pool may open (pool size plus overflow)",
        None,
        MetricType::Gauge,
        each(|p| p.servers_max as f64),
    )?;
    out.family(
        "gatehouse_pool_clients_waiting",
        "Clients waiting for a server connection now",
        None,
        MetricType::Gauge,
        each(|p| p.clients_waiting as f64),
    )?;
    out.family(
        "gatehouse_pool_transactions",
        "Transactions served",
        None,
        MetricType::Counter,
        each(|p| p.transactions as f64),
    )?;
    out.family(
        "gatehouse_pool_queries",
        "Queries served (a simple query, or an extended-protocol batch up to Sync)",
        None,
        MetricType::Counter,
        each(|p| p.queries as f64),
    )?;
    out.family(
        "gatehouse_pool_query",
        "Time queries took, summed",
        Some(&Unit::Seconds),
        MetricType::Counter,
        each(|p| p.query_seconds),
    )?;
    out.family(
        "gatehouse_pool_wait",
        "Time clients waited for a server connection, summed",
        Some(&Unit::Seconds),
        MetricType::Counter,
        each(|p| p.wait_seconds),
    )?;
    out.family(
        "gatehouse_pool_acquisitions",
        "Times a client asked for a server connection",
        None,
        MetricType::Counter,
        each(|p| p.wait_buckets.iter().map(|(_, n)| *n).sum::<u64>() as f64),
    )?;
    out.family(
        "gatehouse_pool_acquire_errors",
        "Clients that got no server connection (pool_timeout, or PostgreSQL refused)",
        None,
        MetricType::Counter,
        each(|p| p.acquire_errors as f64),
    )?;
    out.family(
        "gatehouse_pool_received",
        "Bytes from clients to servers",
        Some(&Unit::Bytes),
        MetricType::Counter,
        each(|p| p.received_bytes as f64),
    )?;
    out.family(
        "gatehouse_pool_sent",
        "Bytes from servers to clients",
        Some(&Unit::Bytes),
        MetricType::Counter,
        each(|p| p.sent_bytes as f64),
    )
}

impl Live {
    fn edge_state(&self, out: &mut Writer<'_>) -> fmt::Result {
        let edge = &self.edge;
        out.gauge(
            "gatehouse_http_requests_in_flight",
            "Requests being answered now",
            None,
            edge.active().count() as f64,
        )?;
        out.gauge(
            "gatehouse_http_connections_open",
            "Client connections open now",
            None,
            edge.connections().open_now() as f64,
        )?;
        let runtime = edge.runtime();
        let servers = runtime.groups.iter().flat_map(|(name, group)| {
            let status = group.status();
            let total = status.servers.len();
            [
                (
                    [("upstream", name.as_str()), ("state", "available")],
                    status.available as f64,
                ),
                (
                    [("upstream", name.as_str()), ("state", "unavailable")],
                    (total - status.available) as f64,
                ),
            ]
        });
        out.family(
            "gatehouse_upstream_servers",
            "Upstream servers by group and whether they can take traffic",
            None,
            MetricType::Gauge,
            servers.collect::<Vec<_>>(),
        )?;
        if let Some(traces) = edge.traces() {
            let counters = traces.counters();
            let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
            let spans = [
                ("exported", read(&counters.exported)),
                ("dropped", read(&counters.dropped)),
            ];
            out.family(
                "gatehouse_trace_spans",
                "Finished spans: exported to the collector, or dropped because the queue was full",
                None,
                MetricType::Counter,
                spans.map(|(outcome, n)| ([("outcome", outcome)], n)),
            )?;
            out.counter(
                "gatehouse_trace_exports_failed",
                "Exports to the collector that failed (their spans are lost)",
                None,
                read(&counters.failed_exports),
            )?;
        }
        if let Some(acme) = edge.acme() {
            let sites = acme.report();
            out.family(
                "gatehouse_tls_certificate_expiry",
                "Time left before each ACME site's certificate expires (negative once past)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
                sites.iter().filter_map(|site| {
                    let left = site.expires_in_seconds?;
                    Some(([("site", site.hosts.join(","))], left as f64))
                }),
            )?;
            out.family(
                "gatehouse_acme_failures",
                "Failed attempts in a row to obtain each ACME site's certificate",
                None,
                MetricType::Gauge,
                sites
                    .iter()
                    .map(|site| ([("site", site.hosts.join(","))], f64::from(site.failures))),
            )?;
        }
        if let Some(connected) = edge.redis_status() {
            out.gauge(
                "gatehouse_redis_up",
                "1 when Redis (shared cache and limits) is reachable",
                None,
                f64::from(u8::from(connected)),
            )?;
        }
        Ok(())
    }

    fn cache(&self, out: &mut Writer<'_>) -> fmt::Result {
        let report = self.edge.cache().report();
        out.counter(
            "gatehouse_cache_served",
            "Body bytes answered from the cache, as sent",
            Some(&Unit::Bytes),
            report.bytes_served as f64,
        )?;
        out.counter(
            "gatehouse_cache_upstream_saved",
            "Body bytes the upstream did not send because the cache answered",
            Some(&Unit::Bytes),
            report.upstream_bytes_saved as f64,
        )?;
        out.counter(
            "gatehouse_cache_corrupt_dropped",
            "Persistent entries found damaged and dropped",
            None,
            report.corrupt_dropped as f64,
        )?;
        let tiers = [
            Some(("memory", &report.memory)),
            report.disk.as_ref().map(|d| ("disk", d)),
        ];
        let tiers: Vec<_> = tiers.into_iter().flatten().collect();
        out.family(
            "gatehouse_cache_entries",
            "Entries held, by tier",
            None,
            MetricType::Gauge,
            tiers
                .iter()
                .map(|(tier, t)| ([("tier", *tier)], t.entries as f64)),
        )?;
        out.family(
            "gatehouse_cache_size",
            "Bytes held, by tier",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            tiers
                .iter()
                .map(|(tier, t)| ([("tier", *tier)], t.bytes as f64)),
        )
    }

    fn plugins(&self, out: &mut Writer<'_>) -> fmt::Result {
        let runtime = self.edge.runtime();
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let versions: Vec<_> = runtime
            .plugins
            .iter()
            .map(|(name, plugin)| (name, plugin.current()))
            .collect();
        let each = |pick: fn(&crate::policy::PluginStats) -> &AtomicU64, scale: f64| {
            versions
                .iter()
                .map(move |(name, version)| {
                    ([("plugin", *name)], read(pick(&version.stats)) * scale)
                })
                .collect::<Vec<_>>()
        };
        out.family(
            "gatehouse_plugin_calls",
            "Policy plugin calls",
            None,
            MetricType::Counter,
            each(|s| &s.calls, 1.0),
        )?;
        out.family(
            "gatehouse_plugin_traps",
            "Policy plugin calls that trapped",
            None,
            MetricType::Counter,
            each(|s| &s.traps, 1.0),
        )?;
        out.family(
            "gatehouse_plugin_timeouts",
            "Policy plugin calls cut off at their deadline",
            None,
            MetricType::Counter,
            each(|s| &s.timeouts, 1.0),
        )?;
        out.family(
            "gatehouse_plugin_call",
            "Time spent in policy plugin calls",
            Some(&Unit::Seconds),
            MetricType::Counter,
            each(|s| &s.nanos, 1e-9),
        )
    }
}

/// This process, under the names every Prometheus dashboard knows.
fn process(out: &mut Writer<'_>, started: Instant) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let uptime = started.elapsed().as_secs_f64();
    out.gauge(
        "process_start_time",
        "When the process started, in seconds since 1970",
        Some(&Unit::Seconds),
        now - uptime,
    )?;
    out.gauge(
        "gatehouse_uptime",
        "Time since gatehouse started",
        Some(&Unit::Seconds),
        uptime,
    )?;
    let Ok(me) = procfs::process::Process::myself() else {
        return Ok(());
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        out.counter(
            "process_cpu",
            "CPU time used by the process, user and system",
            Some(&Unit::Seconds),
            (stat.utime + stat.stime) as f64 / ticks,
        )?;
        out.gauge(
            "process_resident_memory",
            "Resident memory of the process",
            Some(&Unit::Bytes),
            (stat.rss * procfs::page_size()) as f64,
        )?;
        out.gauge(
            "process_virtual_memory",
            "Virtual memory of the process",
            Some(&Unit::Bytes),
            stat.vsize as f64,
        )?;
    }
    if let Ok(fds) = me.fd_count() {
        out.gauge(
            "process_open_fds",
            "Open file descriptors",
            None,
            fds as f64,
        )?;
    }
    Ok(())
}

/// The machine: CPU time by mode, memory and load.
fn host(out: &mut Writer<'_>) -> fmt::Result {
    use procfs::{Current, CurrentSI};
    if let Ok(stat) = procfs::KernelStats::current() {
        let ticks = procfs::ticks_per_second() as f64;
        let cpu = &stat.total;
        let modes = [
            ("user", cpu.user),
            ("nice", cpu.nice),
            ("system", cpu.system),
            ("idle", cpu.idle),
            ("iowait", cpu.iowait.unwrap_or(0)),
            ("irq", cpu.irq.unwrap_or(0)),
            ("softirq", cpu.softirq.unwrap_or(0)),
            ("steal", cpu.steal.unwrap_or(0)),
        ];
        out.family(
            "gatehouse_host_cpu",
            "CPU time of the whole machine, by mode (all CPUs together)",
            Some(&Unit::Seconds),
            MetricType::Counter,
            modes.map(|(mode, t)| ([("mode", mode)], t as f64 / ticks)),
        )?;
        out.gauge(
            "gatehouse_host_cpus",
            "CPUs of the machine",
            None,
            stat.cpu_time.len() as f64,
        )?;
    }
    if let Ok(memory) = procfs::Meminfo::current() {
        out.gauge(
            "gatehouse_host_memory_total",
            "Memory of the machine",
            Some(&Unit::Bytes),
            memory.mem_total as f64,
        )?;
        out.gauge(
            "gatehouse_host_memory_available",
            "Memory available for new work without swapping",
            Some(&Unit::Bytes),
            memory.mem_available.unwrap_or(memory.mem_free) as f64,
        )?;
    }
    if let Ok(load) = procfs::LoadAverage::current() {
        let loads = [("1m", load.one), ("5m", load.five), ("15m", load.fifteen)];
        out.family(
            "gatehouse_host_load",
            "Load average of the machine",
            None,
            MetricType::Gauge,
            loads.map(|(window, value)| ([("window", window)], f64::from(value))),
        )?;
    }
    Ok(())
}
