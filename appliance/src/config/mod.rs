//! Typed configuration: what every subsystem is built from.
//!
//! Owns the schema (every field documented with its default), loading with figment (TOML file, then
//! the reference deployments' variable names, then `GATEHOUSE_SECTION__KEY`), cross-field validation
//! and error messages that name the file, line and key. It must not start anything: building
//! subsystems from a [`Config`] is the job of [`crate::app`].

mod alerts;
mod durations;
mod env;
pub mod explain;
mod load;
mod loadtest;
mod locate;
mod pool;
mod tls;
mod traces;
mod trends;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::policy::{Fallback, Grant, PluginKind};

pub use alerts::{AlertRule, AlertSeverity, AlertsConfig, Measure};
pub use load::{ConfigError, Loaded, load, load_from};
pub use loadtest::LoadTestConfig;
pub use pool::{ADMIN_DATABASE, AuthType, PoolConfig, PoolDatabase, PoolMode, PoolTls, PoolUser};
pub use tls::{
    AcmeConfig, ChallengeKind, OnDemandConfig, SiteTls, TlsConfig, TlsSite, UnknownNames,
};
pub use traces::{OtlpProtocol, TracesConfig};
pub use trends::{TrendTier, TrendsConfig};
pub use validate::Problem;

/// The whole configuration. Every field has a default, so an empty file (or none) is valid.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The public HTTP(S) listeners. See [`EdgeConfig`].
    pub edge: EdgeConfig,
    /// The admin listener (health endpoints, later the API and web UI).
    pub admin: AdminConfig,
    /// Where gatehouse keeps its embedded state.
    pub state: StateConfig,
    /// Process and access logs.
    pub log: LogConfig,
    /// Routes, matched by host and then by the longest path prefix.
    /// Default: one route `/` for any host, to the upstream group `app`.
    pub routes: Vec<RouteConfig>,
    /// Upstream groups by name.
    /// Default: `app` with one server, 127.0.0.1:3000.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Policy plugins by name, bound to routes with `rate_limit` and `cache`. Default: none.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The response cache of routes that name a cache-rules plugin.
    pub cache: CacheConfig,
    /// Response compression.
    pub compression: CompressionConfig,
    /// `Cache-Control` for browsers by content type or path.
    #[serde(default)]
    pub browser_cache: BrowserCacheConfig,
    /// Security headers on every routed response (secure defaults; see the type).
    #[serde(default)]
    pub security_headers: SecurityHeadersConfig,
    /// The PostgreSQL pooler (off until a database is configured).
    pub pool: PoolConfig,
    /// Monitoring switch (`ENABLE_PERFORMANCE_MONITORING`).
    pub monitoring: MonitoringConfig,
    /// Alert rules and the webhook they notify.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Every metric as time series, downsampled as it ages.
    #[serde(default)]
    pub trends: TrendsConfig,
    /// The built-in load test on a schedule.
    #[serde(default)]
    pub load_test: LoadTestConfig,
    /// Request traces over OTLP.
    #[serde(default)]
    pub traces: TracesConfig,
    /// The shared Redis tier for several instances (`HORIZONTAL_SCALING_ENABLED`).
    pub redis: RedisConfig,
    /// How the rate limits that routes' rate-limit plugins ask for are counted.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            edge: EdgeConfig::default(),
            admin: AdminConfig::default(),
            state: StateConfig::default(),
            log: LogConfig::default(),
            routes: vec![RouteConfig {
                name: Some("default".into()),
                upstream: DEFAULT_UPSTREAM.into(),
                ..RouteConfig::default()
            }],
            upstreams: BTreeMap::from([(
                DEFAULT_UPSTREAM.to_string(),
                UpstreamConfig {
                    servers: vec![ServerConfig::Addr("127.0.0.1:3000".into())],
                    ..UpstreamConfig::default()
                },
            )]),
            plugins: BTreeMap::new(),
            cache: CacheConfig::default(),
            compression: CompressionConfig::default(),
            browser_cache: BrowserCacheConfig::default(),
            security_headers: SecurityHeadersConfig::default(),
            pool: PoolConfig::default(),
            monitoring: MonitoringConfig::default(),
            alerts: AlertsConfig::default(),
            trends: TrendsConfig::default(),
            load_test: LoadTestConfig::default(),
            traces: TracesConfig::default(),
            redis: RedisConfig::default(),
            rate_limits: RateLimitsConfig::default(),
        }
    }
}

/// The upstream group the default route leads to.
pub const DEFAULT_UPSTREAM: &str = "app";

/// The public listeners and how client connections are treated.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Plain HTTP/1.1 listen addresses. Default `["0.0.0.0:8080"]`.
    pub listen: Vec<SocketAddr>,
    /// Worker threads serving the edge; 0 means one per CPU. Default `0`.
    pub workers: usize,
    /// Listen backlog of each edge socket. Default `2048`.
    pub backlog: u32,
    /// How long an idle client connection is kept open. Default `"75s"`.
    #[serde(with = "durations")]
    pub keep_alive: Duration,
    /// How long a client may take to send a complete request head. Default `"10s"`.
    #[serde(with = "durations")]
    pub request_head_timeout: Duration,
    /// Longest pause while a client sends a request body; a client silent for longer gets 408
    /// (nginx's `client_body_timeout`). Default `"60s"`.
    #[serde(with = "durations")]
    pub request_body_timeout: Duration,
    /// Longest request target (path and query); longer ones get 414. Default `8192`.
    pub max_uri_length: usize,
    /// Most request header fields; more get 431. At most 96 (actix-http reads no more).
    /// Default `64`.
    pub max_headers: usize,
    /// Most bytes of request header fields, names and values together; more get 431. At most
    /// `"32 KiB"` (actix-http's own bound on a request head). Default `"16 KiB"`.
    pub max_header_bytes: ByteSize,
    /// Largest request body; a larger declared length gets 413 at once, and a streamed body is
    /// cut off with 413 when it grows past it. Routes may set their own. Default `"100 MiB"`.
    pub max_body: ByteSize,
    /// Most open client connections; over it, a new connection's requests get 503 with
    /// `Retry-After` and the connection is closed. Default `10000`.
    pub max_connections: usize,
    /// Most open connections from one client address (trusted proxies excepted); over it, as
    /// above. Default `256`.
    pub max_connections_per_ip: usize,
    /// Host names gatehouse answers for (`example.com`, `*.example.com`); requests naming any
    /// other host get 421 before routing. Default `[]` (any host).
    pub allowed_hosts: Vec<String>,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` is believed: the client is
    /// then the last address in it that is not one of them. Default `[]` (the peer is the
    /// client).
    pub trusted_proxies: Vec<String>,
    /// On SIGTERM, how long in-flight requests may run before the process exits. Default `"30s"`.
    #[serde(with = "durations")]
    pub drain_timeout: Duration,
    /// Liveness path also answered on the edge (for load balancers); `""` turns it off.
    /// Default `"/health"`.
    pub health_path: String,
    /// HTTPS (HTTP/1.1 and HTTP/2 by ALPN). Default: off.
    pub tls: Option<TlsConfig>,
    /// A plain listener that answers every request with a redirect to HTTPS. Default: off.
    pub redirect: Option<RedirectConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            workers: 0,
            backlog: 2048,
            keep_alive: Duration::from_secs(75),
            request_head_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(60),
            max_uri_length: 8192,
            max_headers: 64,
            max_header_bytes: ByteSize::kib(16),
            max_body: ByteSize::mib(100),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            health_path: "/health".into(),
            tls: None,
            redirect: None,
        }
    }
}

/// The HTTP → HTTPS redirect listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedirectConfig {
    /// Listen addresses. Default `["0.0.0.0:80"]`.
    pub listen: Vec<SocketAddr>,
    /// Port named in the `Location`; omitted when 443. Default: the first TLS listener's port.
    pub https_port: Option<u16>,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 80))],
            https_port: None,
        }
    }
}

/// The admin listener. Keep it on loopback or a private network.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address for the health endpoints and the admin API. Default `"127.0.0.1:9901"`.
    pub listen: SocketAddr,
    /// Every admin call but `/health*` needs `Authorization: Bearer TOKEN`. When set (better:
    /// `GATEHOUSE_ADMIN__TOKEN`), this is the token; unset, one is generated at the first start,
    /// printed once and kept hashed in the state store. Default: none (generated).
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

/// The embedded state store.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory of the embedded database; created when missing. Default `"./data"`.
    pub dir: PathBuf,
    /// Memory the store may use for its page cache, e.g. `"64 MiB"`. Default `"64 MiB"`.
    pub cache_capacity: ByteSize,
    /// How often buffered writes are flushed to disk. Default `"500ms"`.
    #[serde(with = "durations")]
    pub flush_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./data"),
            cache_capacity: ByteSize::mib(64),
            flush_interval: Duration::from_millis(500),
        }
    }
}

/// Process logs go to stderr, access logs to stdout.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level or filter directives, as in `RUST_LOG` (e.g. `"info,gatehouse::edge=debug"`).
    /// Default `"info"`.
    pub level: String,
    /// Process log format: `"text"` or `"json"`. Default `"text"`.
    pub format: LogFormat,
    /// Access log format: `"combined"` (nginx's, plus request id, route, upstream and timings),
    /// `"json"`, or `"off"`. Default `"combined"`.
    pub access: AccessLogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            access: AccessLogFormat::Combined,
        }
    }
}

/// How process logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How access logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// nginx's combined format with gatehouse fields appended.
    Combined,
    /// One JSON object per request.
    Json,
    /// No access log.
    Off,
}

/// One route: which requests go to which upstream group.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics. Default: `route-N` (its position).
    #[serde(default)]
    pub name: Option<String>,
    /// Host names this route answers; `*.example.com` matches any subdomain. Default `[]` (any host).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix; the longest matching prefix wins. Default `"/"`.
    #[serde(default = "RouteConfig::default_path")]
    pub path: String,
    /// Name of the upstream group. Required unless `root` is given.
    #[serde(default)]
    pub upstream: String,
    /// Serve static files from this directory instead of an upstream (nginx's `root`): the
    /// request path (without the route's prefix when `strip_prefix`) names the file under it;
    /// `index.html` answers for a directory; `.br`, `.zst` and `.gz` siblings are sent as they
    /// are to clients that accept their coding. Default: none.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Remove the path prefix before forwarding (`/api/users` → `/users`). Default `false`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Name of the rate-limit plugin (in `[plugins]`) that decides this route's limits.
    /// Default: none (no rate limit).
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Name of the cache-rules plugin (in `[plugins]`) that decides what this route caches.
    /// Default: none (nothing cached).
    #[serde(default)]
    pub cache: Option<String>,
    /// This route's browser caching, replacing `[browser_cache]` (`{ enabled = false }` opts
    /// out). Default: the global `[browser_cache]`.
    #[serde(default)]
    pub browser_cache: Option<BrowserCacheConfig>,
    /// This route's security headers, over `[security_headers]` field by field.
    #[serde(default)]
    pub security_headers: Option<SecurityHeadersConfig>,
    /// Methods this route accepts; others get 405 with `Allow`. Default `[]` (any).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Client addresses or networks allowed on this route; others get 403. Default `[]` (all).
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses or networks refused on this route (403), before `allow_ips`.
    /// Default `[]`.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Refuse paths with encoded slashes (`%2F`), which some applications decode into path
    /// separators after routing decided. Default `false`.
    #[serde(default)]
    pub reject_encoded_slash: bool,
    /// Refuse (400) requests whose path or query, percent-decoded, is not UTF-8: for routes
    /// whose application expects text there. Default `false`.
    #[serde(default)]
    pub utf8_only: bool,
    /// Largest request body on this route, replacing `edge.max_body`.
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    /// Cross-origin requests this route allows. Default: none (no CORS headers; preflights
    /// go to the upstream).
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

impl RouteConfig {
    /// Its name, or `route-INDEX` (its place in `edge.routes`) when it has none.
    pub fn name_or_index(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"))
    }

    fn default_path() -> String {
        "/".into()
    }
}

impl Default for RouteConfig {
    /// Everything under `/` to no upstream yet: the base that config literals fill in.
    fn default() -> Self {
        Self {
            name: None,
            hosts: Vec::new(),
            path: Self::default_path(),
            upstream: String::new(),
            root: None,
            strip_prefix: false,
            rate_limit: None,
            cache: None,
            browser_cache: None,
            security_headers: None,
            methods: Vec::new(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            reject_encoded_slash: false,
            utf8_only: false,
            cors: None,
            max_body: None,
        }
    }
}

/// A group of interchangeable upstream servers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Servers as `"host:port"` or `{ addr = "host:port", weight = 2 }`. Required (at least one).
    pub servers: Vec<ServerConfig>,
    /// `"round_robin"` (weighted), `"least_conn"` or `"hash"`. Default `"round_robin"`.
    pub balance: Balance,
    /// For `balance = "hash"`: `"client_ip"` or `"header:NAME"`. Default `"client_ip"`.
    pub hash_key: String,
    /// Time allowed to open a TCP connection to a server. Default `"3s"`.
    #[serde(with = "durations")]
    pub connect_timeout: Duration,
    /// Time allowed from sending the request until the response head arrives. Default `"60s"`.
    #[serde(with = "durations")]
    pub response_header_timeout: Duration,
    /// Longest pause allowed while streaming a response body. Default `"60s"`.
    #[serde(with = "durations")]
    pub body_idle_timeout: Duration,
    /// Extra attempts on another server after a connect failure; only for idempotent requests
    /// without a body. Default `1`.
    pub retries: u32,
    /// Idle keep-alive connections kept per server and worker thread (nginx's `keepalive`);
    /// 0 closes every connection after its response. Default `64`.
    pub max_idle: usize,
    /// How long an idle upstream connection is kept for reuse. Default `"60s"`.
    #[serde(with = "durations")]
    pub keepalive: Duration,
    /// Send the client's `Host` header upstream (`false`: the server's `host:port`). Default `true`.
    pub preserve_host: bool,
    /// Active health checks. Default: off (servers count as healthy).
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection of servers that keep failing.
    pub eject: EjectConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            hash_key: "client_ip".into(),
            connect_timeout: Duration::from_secs(3),
            response_header_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            retries: 1,
            max_idle: 64,
            keepalive: Duration::from_secs(60),
            preserve_host: true,
            health_check: None,
            eject: EjectConfig::default(),
        }
    }
}

/// An upstream server, either as a bare address or with a weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ServerConfig {
    /// `"host:port"`, weight 1.
    Addr(String),
    /// `{ addr = "host:port", weight = N }`.
    Weighted(WeightedServer),
}

/// A server with a weight.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedServer {
    /// `host:port`.
    pub addr: String,
    /// Share of round-robin traffic, 1 to 100. Default `1`.
    #[serde(default = "WeightedServer::default_weight")]
    pub weight: u32,
}

impl WeightedServer {
    fn default_weight() -> u32 {
        1
    }
}

/// By hand rather than `untagged`: a table with a misspelt key must be refused by name, not as
/// "data did not match any variant".
impl<'de> Deserialize<'de> for ServerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = ServerConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"host:port\" or { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, addr: &str) -> Result<ServerConfig, E> {
                Ok(ServerConfig::Addr(addr.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ServerConfig, A::Error> {
                WeightedServer::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ServerConfig::Weighted)
            }
        }
        deserializer.deserialize_any(Either)
    }
}

impl ServerConfig {
    /// The `host:port` of the server.
    pub fn addr(&self) -> &str {
        match self {
            Self::Addr(addr) | Self::Weighted(WeightedServer { addr, .. }) => addr,
        }
    }

    /// The server's round-robin weight.
    pub fn weight(&self) -> u32 {
        match self {
            Self::Addr(_) => 1,
            Self::Weighted(server) => server.weight,
        }
    }
}

/// Load-balancing strategy of an upstream group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// The server with the fewest requests in flight.
    LeastConn,
    /// Consistent hash of the client IP or a header (see `hash_key`).
    Hash,
}

/// Active health checks: a GET to each server on an interval.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path requested; a 2xx or 3xx answer is healthy. Default `"/health"`.
    pub path: String,
    /// Time between checks. Default `"5s"`.
    #[serde(with = "durations")]
    pub interval: Duration,
    /// Time allowed for one check. Default `"2s"`.
    #[serde(with = "durations")]
    pub timeout: Duration,
    /// Consecutive passes that bring a server back. Default `2`.
    pub rise: u32,
    /// Consecutive failures that take a server out. Default `3`.
    pub fall: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// Passive ejection: servers that fail requests in a row rest for a cooldown.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectConfig {
    /// Consecutive failed requests (connect errors, timeouts) that eject a server; 0 turns
    /// ejection off. Default `3`.
    pub failures: u32,
    /// How long an ejected server gets no traffic. Default `"30s"`.
    #[serde(with = "durations")]
    pub cooldown: Duration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        Self {
            failures: 3,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// A policy plugin: a WebAssembly component for the `gatehouse:policy` contract.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `"rate-limit"`, `"cache-rules"` or `"recommendations"`. Required.
    pub kind: PluginKind,
    /// `"builtin:rate-limit"` (a built-in) or the path of a `.wasm` component. Required.
    pub source: String,
    /// Settings handed to the plugin, as JSON, through the `config` grant. Default `{}`.
    #[serde(default = "PluginConfig::default_config")]
    pub config: serde_json::Value,
    /// Host capabilities it may import: `"log"`, `"now"`, `"kv"`, `"config"`. A plugin that
    /// imports one it is not granted is refused at load. Default `["config"]`.
    #[serde(default = "PluginConfig::default_grants")]
    pub grants: BTreeSet<Grant>,
    /// When it traps or times out: `"open"` (as if it were not there) or `"closed"` (503).
    /// Default `"open"`.
    #[serde(default = "PluginConfig::default_fallback")]
    pub fallback: Fallback,
    /// Time one call may take before it is cut off. Default `"10ms"`.
    #[serde(with = "durations", default = "PluginConfig::default_deadline")]
    pub deadline: Duration,
    /// Memory it may grow to (at most 64 MiB). Default `"16 MiB"`.
    #[serde(default = "PluginConfig::default_memory")]
    pub memory: ByteSize,
    /// Bytes its private key-value store may hold (grant `kv`). Default `"1 MiB"`.
    #[serde(default = "PluginConfig::default_kv_quota")]
    pub kv_quota: ByteSize,
}

impl PluginConfig {
    fn default_config() -> serde_json::Value {
        serde_json::Value::Object(serde_json::Map::new())
    }
    fn default_grants() -> BTreeSet<Grant> {
        BTreeSet::from([Grant::Config])
    }
    fn default_fallback() -> Fallback {
        Fallback::Open
    }
    fn default_deadline() -> Duration {
        Duration::from_millis(10)
    }
    fn default_memory() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_kv_quota() -> ByteSize {
        ByteSize::mib(1)
    }
}

/// How rate limits are counted: in memory, or in Redis when `redis.enabled` so that every
/// instance spends from one quota.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// With `redis.enabled`, count in Redis (one atomic script per decision), so that N
    /// instances share one quota. Default `true`.
    pub shared: bool,
    /// What shared limits do while Redis is unreachable: `"open"` counts on each instance alone
    /// (local limits take over), `"closed"` refuses limited requests with 503. Default `"open"`.
    pub when_redis_down: WhenRedisDown,
    /// Add `RateLimit` and `RateLimit-Policy` to allowed responses too (429s always carry
    /// them). Default `true`.
    pub headers_on_allowed: bool,
    /// Keys counted in memory at most; beyond it, the keys nearest to a full bucket are
    /// forgotten first (forgetting a full bucket changes nothing). Default `262144`.
    pub max_keys: usize,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            shared: true,
            when_redis_down: WhenRedisDown::Open,
            headers_on_allowed: true,
            max_keys: 262_144,
        }
    }
}

/// What shared rate limits do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenRedisDown {
    /// Each instance counts alone.
    Open,
    /// Limited requests are refused with 503.
    Closed,
}

/// Monitoring: what is sampled, and how often recommendations are made.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Sample the metrics and make recommendations on a schedule
    /// (`ENABLE_PERFORMANCE_MONITORING`); without it they are made only when asked for.
    /// Default `true`.
    pub enabled: bool,
    /// The span of recent traffic recommendations judge. Default `"5m"`.
    #[serde(with = "durations")]
    pub window: Duration,
    /// How often the metrics are read for the window. Default `"10s"`.
    #[serde(with = "durations")]
    pub sample_interval: Duration,
    /// How often recommendations are made anew. Default `"1m"`.
    #[serde(with = "durations")]
    pub recommend_interval: Duration,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(300),
            sample_interval: Duration::from_secs(10),
            recommend_interval: Duration::from_secs(60),
        }
    }
}

/// The response cache.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes the memory tier may hold (bodies, headers and keys); the least used entries are
    /// evicted beyond it. Default `"256 MiB"` (the reference deployment's Redis cache).
    pub memory: ByteSize,
    /// Bytes the persistent tier may hold in the state store, so entries survive a restart;
    /// `"0"` keeps the cache in memory only. Default `"1 GiB"`.
    pub disk: ByteSize,
    /// Largest response body stored; bigger ones stream through uncached. Default `"8 MiB"`.
    pub max_entry: ByteSize,
    /// Response header that says what the cache did: HIT, STALE, REVALIDATED, MISS, BYPASS.
    /// Empty for none.
    /// Default `"X-Cache"`.
    pub status_header: String,
    /// How long a request waits for another one already fetching the same key before going
    /// to the upstream itself (nginx's `proxy_cache_lock_timeout`). Default `"5s"`.
    #[serde(with = "durations")]
    pub coalesce_timeout: Duration,
    /// Honour the client's `Cache-Control` and `Pragma` (RFC 9111): `no-cache` and `max-age`
    /// revalidate with the upstream, `max-stale` accepts stale entries, `only-if-cached` answers
    /// 504 instead of going upstream, `no-store` keeps the answer out of the cache. Turn it off
    /// (as nginx is by default) so clients cannot make the cache go to the upstream.
    /// Default `true`.
    pub client_directives: bool,
    /// Pages fetched through the edge at start and every `warm_interval`, so they are cached
    /// (in every coding) before visitors ask: paths (`"/"`) or URLs naming the host
    /// (`"http://shop.example/"`). Default `[]`.
    pub warm: Vec<String>,
    /// How often the warming list is fetched again. Default `"5m"`.
    #[serde(with = "durations")]
    pub warm_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: ByteSize::mib(256),
            disk: ByteSize::gib(1),
            max_entry: ByteSize::mib(8),
            status_header: "X-Cache".into(),
            coalesce_timeout: Duration::from_secs(5),
            client_directives: true,
            warm: Vec::new(),
            warm_interval: Duration::from_secs(300),
        }
    }
}

/// Security headers. Each is sent with its default unless set here (or per route); `""` removes
/// it. Defaults: `Content-Security-Policy: default-src 'self'`, `X-Content-Type-Options: nosniff`,
/// `X-Frame-Options: DENY`, `Referrer-Policy: strict-origin-when-cross-origin`,
/// `Permissions-Policy: camera=(), microphone=(), geolocation=(), payment=()`,
/// `Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy: credentialless`,
/// `Cross-Origin-Resource-Policy: same-origin`, and on TLS
/// `Strict-Transport-Security: max-age=31536000`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<String>,
    /// `Strict-Transport-Security`.
    pub strict_transport_security: Option<String>,
    /// Send `Strict-Transport-Security` on plain HTTP too (browsers ignore it there; some
    /// scanners want it). Default `false`.
    pub strict_transport_security_on_http: Option<bool>,
    /// `X-Content-Type-Options`.
    pub x_content_type_options: Option<String>,
    /// `X-Frame-Options`.
    pub x_frame_options: Option<String>,
    /// `Referrer-Policy`.
    pub referrer_policy: Option<String>,
    /// `Permissions-Policy`.
    pub permissions_policy: Option<String>,
    /// `Cross-Origin-Opener-Policy`.
    pub cross_origin_opener_policy: Option<String>,
    /// `Cross-Origin-Embedder-Policy`.
    pub cross_origin_embedder_policy: Option<String>,
    /// `Cross-Origin-Resource-Policy`.
    pub cross_origin_resource_policy: Option<String>,
    /// Keep the upstream's own value of these headers where it sends one. Default `false`.
    pub upstream_wins: Option<bool>,
    /// Response headers removed from upstream answers. Default `["Server", "X-Powered-By"]`.
    pub strip: Option<Vec<String>>,
}

impl SecurityHeadersConfig {
    /// The value set for the header `name` (lowercase), if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        let field = match name {
            "content-security-policy" => &self.content_security_policy,
            "strict-transport-security" => &self.strict_transport_security,
            "x-content-type-options" => &self.x_content_type_options,
            "x-frame-options" => &self.x_frame_options,
            "referrer-policy" => &self.referrer_policy,
            "permissions-policy" => &self.permissions_policy,
            "cross-origin-opener-policy" => &self.cross_origin_opener_policy,
            "cross-origin-embedder-policy" => &self.cross_origin_embedder_policy,
            "cross-origin-resource-policy" => &self.cross_origin_resource_policy,
            _ => return None,
        };
        field.as_deref()
    }
}

/// Cross-origin resource sharing for a route: which origins may read its answers, and the
/// preflight answers gatehouse gives itself (the upstream never sees a preflight).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Allowed origins: exact (`"https://app.example.com"`), any subdomain
    /// (`"https://*.example.com"`), or `"*"` for any. Required.
    pub origins: Vec<String>,
    /// Methods allowed cross-origin. Default `["GET", "HEAD", "POST"]`.
    pub methods: Vec<String>,
    /// Request headers allowed cross-origin. Default `["Content-Type"]`.
    pub headers: Vec<String>,
    /// Response headers the page may read besides the safelisted ones. Default `[]`.
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials (the origin is then echoed, never `*`). Default `false`.
    pub credentials: bool,
    /// How long browsers may reuse a preflight answer. Default `"10m"`.
    #[serde(with = "durations")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            headers: vec!["Content-Type".into()],
            expose_headers: Vec::new(),
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// `Cache-Control` for browsers, by content type or path pattern (nginx's `expires`), on
/// responses whose upstream sent none.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserCacheConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Replace the upstream's own `Cache-Control` too. Default `false` (the upstream's wins).
    pub override_upstream: bool,
    /// The first matching rule sets the header. Default, as the reference deployment: HTML 5
    /// minutes; CSS and JavaScript 1 year, immutable; images 6 months, immutable; fonts 1 year,
    /// immutable.
    pub rules: Vec<BrowserCacheRule>,
}

/// One browser-caching rule: it matches when the response's media type and the request's path
/// both match (an empty list matches anything; at least one list must be given).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrowserCacheRule {
    /// Media types (`"text/html"`) or type prefixes ending in `/` (`"image/"`).
    #[serde(default)]
    pub types: Vec<String>,
    /// Path patterns, `*` standing for any run of characters (`"/static/*"`, `"*.css"`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// The `Cache-Control` value, e.g. `"public, max-age=300"`.
    pub cache_control: String,
}

impl Default for BrowserCacheConfig {
    fn default() -> Self {
        let rule = |types: &[&str], cache_control: &str| BrowserCacheRule {
            types: types.iter().map(|t| t.to_string()).collect(),
            paths: Vec::new(),
            cache_control: cache_control.into(),
        };
        let year = "public, max-age=31536000, immutable";
        Self {
            enabled: true,
            override_upstream: false,
            rules: vec![
                rule(&["text/html"], "public, max-age=300"),
                rule(
                    &[
                        "text/css",
                        "text/javascript",
                        "application/javascript",
                        "application/x-javascript",
                    ],
                    year,
                ),
                rule(&["image/"], "public, max-age=15552000, immutable"),
                rule(
                    &[
                        "font/",
                        "application/font-woff",
                        "application/font-woff2",
                        "application/vnd.ms-fontobject",
                        "application/x-font-ttf",
                    ],
                    year,
                ),
            ],
        }
    }
}

/// Response compression (gzip, brotli, zstd), negotiated by `Accept-Encoding`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Compress responses at all. Default `true`.
    pub enabled: bool,
    /// gzip level, 1 (fastest) to 9 (smallest). Default `6` (the reference deployment's).
    pub gzip_level: u32,
    /// brotli quality, 0 to 11. Default `5`.
    pub brotli_level: u32,
    /// zstd level, 1 to 19. Default `3`.
    pub zstd_level: i32,
    /// Responses shorter than this go uncompressed. Default `"256 B"`.
    pub min_length: ByteSize,
    /// Media types compressed (any `+json` and `+xml` type is too). Default: the 30+ text, script,
    /// data, font and vector-image types the reference deployment compressed.
    pub types: Vec<String>,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        let types = [
            "text/html",
            "text/plain",
            "text/css",
            "text/javascript",
            "text/xml",
            "text/csv",
            "text/markdown",
            "text/calendar",
            "text/vtt",
            "text/x-component",
            "text/cache-manifest",
            "application/javascript",
            "application/x-javascript",
            "application/ecmascript",
            "application/json",
            "application/x-ndjson",
            "application/xml",
            "application/xhtml+xml",
            "application/rss+xml",
            "application/atom+xml",
            "application/manifest+json",
            "application/ld+json",
            "application/graphql-response+json",
            "application/wasm",
            "application/vnd.ms-fontobject",
            "application/x-font-ttf",
            "application/x-font-opentype",
            "font/ttf",
            "font/otf",
            "font/opentype",
            "image/svg+xml",
            "image/x-icon",
            "image/vnd.microsoft.icon",
            "image/bmp",
        ];
        Self {
            enabled: true,
            gzip_level: 6,
            brotli_level: 5,
            zstd_level: 3,
            min_length: ByteSize::b(256),
            types: types.into_iter().map(String::from).collect(),
        }
    }
}

/// The shared Redis tier.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Share cache and limits with other instances through Redis
    /// (`HORIZONTAL_SCALING_ENABLED`). Default `false`.
    pub enabled: bool,
    /// `redis://` or `rediss://` URL of one server; `redis-cluster://HOST:PORT?node=HOST:PORT&...`
    /// (or `rediss-cluster://`) for Redis Cluster. Default `"redis://127.0.0.1:6379"`.
    pub url: String,
    /// Prepended to every key and channel, so several deployments can share one Redis.
    /// Default `"gatehouse:"`.
    pub key_prefix: String,
    /// Longest wait for one Redis command on the request path; a slower or absent Redis
    /// counts as a miss. Default `"250ms"`.
    #[serde(with = "durations")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "gatehouse:".into(),
            timeout: Duration::from_millis(250),
        }
    }
}
