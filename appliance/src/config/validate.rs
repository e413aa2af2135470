//! Cross-field checks that serde cannot express. Pure: no files or sockets are touched here
//! (provisioning checks such as "does the certificate parse" belong to the subsystem that uses it).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::uri::Authority;

use super::{
    Balance, BrowserCacheConfig, ChallengeKind, Config, CorsConfig, OnDemandConfig, PluginConfig,
    RouteConfig, SecurityHeadersConfig, SiteTls, TlsConfig, UpstreamConfig,
};
use crate::policy::{self, PluginKind};

/// One problem with a value: the key path (segments; array indexes as numbers) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `["routes", "1", "upstream"]`.
    pub key: Vec<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl Problem {
    /// A problem at the dotted `key` (indexes written as numbers: `routes.1.upstream`).
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.split('.').map(str::to_string).collect(),
            message: message.into(),
        }
    }
}

/// Every value can be sent as a header, every stripped name is a header name.
fn check_security_headers(key: &str, config: &SecurityHeadersConfig, problems: &mut Vec<Problem>) {
    let names = crate::edge::security_headers::DEFAULTS
        .iter()
        .map(|(name, _)| *name)
        .chain(["strict-transport-security"]);
    for name in names {
        if let Some(value) = config.value(name)
            && HeaderValue::from_str(value).is_err()
        {
            problems.push(Problem::new(
                &format!("{key}.{}", name.replace('-', "_")),
                "must be a header value (visible ASCII), or \"\" to remove the header",
            ));
        }
    }
    for (index, name) in config.strip.iter().flatten().enumerate() {
        if HeaderName::try_from(name.as_str()).is_err() {
            problems.push(Problem::new(
                &format!("{key}.strip.{index}"),
                format!("{name:?} is not a header name"),
            ));
        }
    }
}

/// Origins are `*`, `scheme://host[:port]` or `scheme://*.domain`; methods and headers are
/// tokens.
fn check_cors(key: &str, config: &CorsConfig, problems: &mut Vec<Problem>) {
    if config.origins.is_empty() {
        problems.push(Problem::new(
            &format!("{key}.origins"),
            "list the origins allowed (\"*\" for any)",
        ));
    }
    for (index, origin) in config.origins.iter().enumerate() {
        let well_formed = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty()
                    && !host.is_empty()
                    && !host.contains('/')
                    && !host.strip_prefix("*.").unwrap_or(host).contains('*')
            });
        if !well_formed {
            problems.push(Problem::new(
                &format!("{key}.origins.{index}"),
                format!("{origin:?} is not \"*\", scheme://host[:port] or scheme://*.domain"),
            ));
        }
    }
    let lists = [
        ("methods", &config.methods),
        ("headers", &config.headers),
        ("expose_headers", &config.expose_headers),
    ];
    for (field, items) in lists {
        for (index, item) in items.iter().enumerate() {
            if HeaderName::try_from(item.as_str()).is_err() {
                problems.push(Problem::new(
                    &format!("{key}.{field}.{index}"),
                    format!("{item:?} is not a token"),
                ));
            }
        }
    }
}

/// Every rule names what it matches, with a `Cache-Control` value that can be sent.
fn check_browser_cache(key: &str, config: &BrowserCacheConfig, problems: &mut Vec<Problem>) {
    for (index, rule) in config.rules.iter().enumerate() {
        let at = |field: &str| format!("{key}.rules.{index}{field}");
        if rule.types.is_empty() && rule.paths.is_empty() {
            problems.push(Problem::new(
                &at(""),
                "give types, paths or both (a rule for everything would mark API answers too)",
            ));
        }
        if rule.cache_control.trim().is_empty()
            || HeaderValue::from_str(&rule.cache_control).is_err()
        {
            problems.push(Problem::new(
                &at(".cache_control"),
                "must be a non-empty header value (visible ASCII)",
            ));
        }
        for (p, path) in rule.paths.iter().enumerate() {
            if !(path.starts_with('/') || path.starts_with('*')) {
                problems.push(Problem::new(
                    &at(&format!(".paths.{p}")),
                    format!("{path:?} must start with / or *"),
                ));
            }
        }
    }
}

/// Longest upstream weight accepted; the round-robin schedule has one slot per weight unit.
const MAX_WEIGHT: u32 = 100;

impl Config {
    /// Every cross-field problem, in file order. Empty means valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_listeners(&mut problems);
        self.check_log(&mut problems);
        self.check_request_limits(&mut problems);
        for (index, route) in self.routes.iter().enumerate() {
            self.check_route(index, route, &mut problems);
        }
        check_route_overlaps(&self.routes, &mut problems);
        check_browser_cache("browser_cache", &self.browser_cache, &mut problems);
        check_security_headers("security_headers", &self.security_headers, &mut problems);
        for (index, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes.{index}.{field}");
            if let Some(config) = &route.browser_cache {
                check_browser_cache(&key("browser_cache"), config, &mut problems);
            }
            if let Some(config) = &route.security_headers {
                check_security_headers(&key("security_headers"), config, &mut problems);
            }
            if let Some(config) = &route.cors {
                check_cors(&key("cors"), config, &mut problems);
            }
        }
        for (name, upstream) in &self.upstreams {
            check_upstream(name, upstream, &mut problems);
        }
        for (name, plugin) in &self.plugins {
            check_plugin(name, plugin, &mut problems);
        }
        self.pool.check(&mut problems);
        if self.redis.enabled
            && let Err(why) = check_redis_url(&self.redis.url)
        {
            problems.push(Problem::new(
                "redis.url",
                format!(
                    "not a Redis URL ({why}): use redis://, rediss://, redis-cluster:// or rediss-cluster://"
                ),
            ));
        }
        if self.rate_limits.max_keys == 0 {
            problems.push(Problem::new("rate_limits.max_keys", "must be at least 1"));
        }
        if self.state.dir.as_os_str().is_empty() {
            problems.push(Problem::new("state.dir", "must not be empty"));
        }
        self.check_cache_and_compression(&mut problems);
        self.check_monitoring(&mut problems);
        problems
    }

    fn check_monitoring(&self, problems: &mut Vec<Problem>) {
        let monitoring = &self.monitoring;
        for (key, value) in [
            ("monitoring.window", monitoring.window),
            ("monitoring.sample_interval", monitoring.sample_interval),
            (
                "monitoring.recommend_interval",
                monitoring.recommend_interval,
            ),
        ] {
            check_positive(key, value, problems);
        }
        if monitoring.sample_interval > monitoring.window {
            problems.push(Problem::new(
                "monitoring.sample_interval",
                "must not be longer than monitoring.window (the window needs two readings)",
            ));
        }
        self.check_alerts(problems);
        self.check_trends(problems);
        self.check_load_test(problems);
        self.check_traces(problems);
    }

    fn check_traces(&self, problems: &mut Vec<Problem>) {
        let traces = &self.traces;
        let endpoint = traces.endpoint.parse::<actix_web::http::Uri>();
        let web = endpoint.is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !web {
            problems.push(Problem::new(
                "traces.endpoint",
                format!("{:?} is not an http:// or https:// URL", traces.endpoint),
            ));
        }
        if !(0.0..=1.0).contains(&traces.sampling_ratio) {
            problems.push(Problem::new(
                "traces.sampling_ratio",
                "must be between 0 and 1",
            ));
        }
        if traces.queue_size == 0 {
            problems.push(Problem::new("traces.queue_size", "must be at least 1"));
        }
        check_positive("traces.export_timeout", traces.export_timeout, problems);
        match (&traces.client_cert, &traces.client_key) {
            (Some(_), None) => problems.push(Problem::new(
                "traces.client_key",
                "is needed with traces.client_cert",
            )),
            (None, Some(_)) => problems.push(Problem::new(
                "traces.client_cert",
                "is needed with traces.client_key",
            )),
            _ => {}
        }
        let https = traces.endpoint.starts_with("https://");
        let tls_files = [
            ("traces.ca_file", &traces.ca_file),
            ("traces.client_cert", &traces.client_cert),
        ];
        for (key, file) in tls_files {
            if file.is_some() && !https {
                problems.push(Problem::new(key, "applies to an https:// endpoint only"));
            }
        }
    }

    fn check_load_test(&self, problems: &mut Vec<Problem>) {
        let test = &self.load_test;
        for (index, url) in test.urls.iter().enumerate() {
            let parsed = url.parse::<actix_web::http::Uri>();
            let web = parsed.is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
            });
            if !web {
                problems.push(Problem::new(
                    &format!("load_test.urls.{index}"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if test.enabled && test.urls.is_empty() {
            problems.push(Problem::new(
                "load_test.urls",
                "name at least one URL to load (only configured URLs are)",
            ));
        }
        if test.levels.is_empty() || test.levels.iter().any(|&n| n == 0 || n > 10_000) {
            problems.push(Problem::new(
                "load_test.levels",
                "each level is 1 to 10000 concurrent clients, and there is at least one",
            ));
        }
        for (key, value) in [
            ("load_test.interval", test.interval),
            ("load_test.duration", test.duration),
            ("load_test.timeout", test.timeout),
        ] {
            check_positive(key, value, problems);
        }
        if test.history == 0 {
            problems.push(Problem::new("load_test.history", "must be at least 1"));
        }
    }

    fn check_trends(&self, problems: &mut Vec<Problem>) {
        let tiers = &self.trends.tiers;
        if tiers.is_empty() {
            problems.push(Problem::new("trends.tiers", "needs at least one tier"));
        }
        for (index, tier) in tiers.iter().enumerate() {
            let key = |field: &str| format!("trends.tiers.{index}.{field}");
            if tier.step.subsec_nanos() != 0 || tier.step.is_zero() {
                problems.push(Problem::new(
                    &key("step"),
                    "must be a whole number of seconds",
                ));
            }
            if tier.keep < tier.step {
                problems.push(Problem::new(&key("keep"), "must be at least the step"));
            }
            if let Some(finer) = index.checked_sub(1).map(|i| &tiers[i])
                && (tier.step <= finer.step || tier.keep <= finer.keep)
            {
                problems.push(Problem::new(
                    &key("step"),
                    "tiers go from finest to coarsest: each step and keep longer than the last",
                ));
            }
        }
        if self.trends.max_series == 0 {
            problems.push(Problem::new("trends.max_series", "must be at least 1"));
        }
    }

    fn check_alerts(&self, problems: &mut Vec<Problem>) {
        let alerts = &self.alerts;
        if let Some(url) = &alerts.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(Problem::new(
                "alerts.webhook",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if alerts.webhook_attempts == 0 {
            problems.push(Problem::new(
                "alerts.webhook_attempts",
                "must be at least 1",
            ));
        }
        check_positive("alerts.webhook_timeout", alerts.webhook_timeout, problems);
        if alerts.history == 0 {
            problems.push(Problem::new("alerts.history", "must be at least 1"));
        }
        let mut names = HashSet::new();
        for (index, rule) in alerts.rules.iter().enumerate() {
            let key = |field: &str| format!("alerts.rules.{index}.{field}");
            if !names.insert(rule.name.as_str()) {
                problems.push(Problem::new(
                    &key("name"),
                    format!("another rule is named {:?}", rule.name),
                ));
            }
            if rule.above.is_some() == rule.below.is_some() {
                problems.push(Problem::new(
                    &key("above"),
                    "give exactly one of above and below",
                ));
            }
            check_positive(&key("window"), rule.window, problems);
            if rule.window > self.monitoring.window {
                problems.push(Problem::new(
                    &key("window"),
                    "must not be longer than monitoring.window (readings are kept that long)",
                ));
            }
            let routed = rule.route == "*"
                || self.routes.iter().enumerate().any(|(i, route)| {
                    route.name.clone().unwrap_or_else(|| format!("route-{i}")) == rule.route
                });
            if !routed {
                problems.push(Problem::new(
                    &key("route"),
                    format!("no route named {:?} (or \"*\" for all)", rule.route),
                ));
            }
        }
    }

    fn check_cache_and_compression(&self, problems: &mut Vec<Problem>) {
        if !self.cache.status_header.is_empty()
            && actix_web::http::header::HeaderName::try_from(self.cache.status_header.as_str())
                .is_err()
        {
            problems.push(Problem::new(
                "cache.status_header",
                "is not a valid header name",
            ));
        }
        if self.cache.max_entry > self.cache.memory {
            problems.push(Problem::new(
                "cache.max_entry",
                "must not be larger than cache.memory",
            ));
        }
        for (index, target) in self.cache.warm.iter().enumerate() {
            if let Err(why) = crate::edge::cache::WarmTarget::parse(target) {
                problems.push(Problem::new(&format!("cache.warm.{index}"), why));
            }
        }
        if !self.cache.warm.is_empty() && self.cache.warm_interval < Duration::from_secs(1) {
            problems.push(Problem::new("cache.warm_interval", "must be at least 1s"));
        }
        let c = &self.compression;
        for (key, level, range) in [
            ("compression.gzip_level", c.gzip_level as i32, 1..=9),
            ("compression.brotli_level", c.brotli_level as i32, 0..=11),
            ("compression.zstd_level", c.zstd_level, 1..=19),
        ] {
            if !range.contains(&level) {
                problems.push(Problem::new(
                    key,
                    format!("must be {} to {}", range.start(), range.end()),
                ));
            }
        }
    }

    fn check_listeners(&self, problems: &mut Vec<Problem>) {
        let edge = &self.edge;
        if edge.listen.is_empty() && edge.tls.is_none() {
            problems.push(Problem::new(
                "edge.listen",
                "needs an address, or configure edge.tls",
            ));
        }
        if edge.workers > 512 {
            problems.push(Problem::new(
                "edge.workers",
                "must be at most 512 (0 means one per CPU)",
            ));
        }
        if !edge.health_path.is_empty() && !edge.health_path.starts_with('/') {
            problems.push(Problem::new(
                "edge.health_path",
                "must start with / (or be empty)",
            ));
        }
        for (key, value) in [
            ("edge.keep_alive", edge.keep_alive),
            ("edge.request_head_timeout", edge.request_head_timeout),
        ] {
            check_positive(key, value, problems);
        }
        if let Some(redirect) = &edge.redirect
            && edge.tls.is_none()
            && redirect.https_port.is_none()
        {
            problems.push(Problem::new(
                "edge.redirect.https_port",
                "is needed when edge.tls is not configured (where should clients go?)",
            ));
        }
        if let Some(tls) = &edge.tls {
            if tls.listen.is_empty() {
                problems.push(Problem::new(
                    "edge.tls.listen",
                    "needs at least one address",
                ));
            }
            check_positive("edge.tls.reload_interval", tls.reload_interval, problems);
            let plain_listener = !edge.listen.is_empty() || edge.redirect.is_some();
            check_tls_certificates(tls, plain_listener, problems);
        }

        let mut seen: HashSet<SocketAddr> = HashSet::new();
        let tls = edge
            .tls
            .iter()
            .flat_map(|t| t.listen.iter().map(|a| ("edge.tls.listen", a)));
        let redirect = edge
            .redirect
            .iter()
            .flat_map(|r| r.listen.iter().map(|a| ("edge.redirect.listen", a)));
        let all = edge
            .listen
            .iter()
            .map(|a| ("edge.listen", a))
            .chain(tls)
            .chain(redirect)
            .chain(std::iter::once(("admin.listen", &self.admin.listen)));
        // Port 0 asks the OS for any free port, so it never collides.
        for (key, addr) in all.filter(|(_, addr)| addr.port() != 0) {
            if !seen.insert(*addr) {
                problems.push(Problem::new(
                    key,
                    format!("{addr} is used by another listener"),
                ));
            }
        }
    }

    fn check_request_limits(&self, problems: &mut Vec<Problem>) {
        let edge = &self.edge;
        if !(1..=96).contains(&edge.max_headers) {
            problems.push(Problem::new("edge.max_headers", "must be 1 to 96"));
        }
        if edge.max_header_bytes.as_u64() > 32 * 1024 || edge.max_header_bytes.as_u64() == 0 {
            problems.push(Problem::new(
                "edge.max_header_bytes",
                "must be 1 B to 32 KiB",
            ));
        }
        for (i, host) in edge.allowed_hosts.iter().enumerate() {
            if let Err(why) = check_host_pattern(host) {
                problems.push(Problem::new(&format!("edge.allowed_hosts.{i}"), why));
            }
        }
        for (i, text) in edge.trusted_proxies.iter().enumerate() {
            if let Err(why) = crate::edge::client_ip::parse_network(text) {
                problems.push(Problem::new(&format!("edge.trusted_proxies.{i}"), why));
            }
        }
        if edge.max_connections == 0 || edge.max_connections_per_ip == 0 {
            problems.push(Problem::new(
                if edge.max_connections == 0 {
                    "edge.max_connections"
                } else {
                    "edge.max_connections_per_ip"
                },
                "must be at least 1",
            ));
        }
        if edge.max_uri_length < 16 {
            problems.push(Problem::new("edge.max_uri_length", "must be at least 16"));
        }
    }

    fn check_log(&self, problems: &mut Vec<Problem>) {
        if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            problems.push(Problem::new("log.level", format!("invalid filter: {err}")));
        }
    }

    fn check_route(&self, index: usize, route: &RouteConfig, problems: &mut Vec<Problem>) {
        let key = |field: &str| format!("routes.{index}.{field}");
        for (field, list) in [
            ("allow_ips", &route.allow_ips),
            ("deny_ips", &route.deny_ips),
        ] {
            for (i, text) in list.iter().enumerate() {
                if let Err(why) = crate::edge::client_ip::parse_network(text) {
                    problems.push(Problem::new(&key(&format!("{field}.{i}")), why));
                }
            }
        }
        for (i, method) in route.methods.iter().enumerate() {
            if actix_web::http::Method::from_bytes(method.as_bytes()).is_err() {
                problems.push(Problem::new(
                    &key(&format!("methods.{i}")),
                    format!("{method:?} is not a method"),
                ));
            }
        }
        if route.root.is_some() {
            if !route.upstream.is_empty() {
                problems.push(Problem::new(
                    &key("root"),
                    "give upstream or root, not both",
                ));
            }
            if route.cache.is_some() {
                problems.push(Problem::new(
                    &key("cache"),
                    "static files are served from disk: a root route has no cache",
                ));
            }
        } else if route.upstream.is_empty() {
            problems.push(Problem::new(
                &key("upstream"),
                "required: the upstream group to send requests to (or root, for static files)",
            ));
        } else if !self.upstreams.contains_key(&route.upstream) {
            let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                &key("upstream"),
                format!(
                    "no upstream group named {:?} (defined: {})",
                    route.upstream,
                    list(&known)
                ),
            ));
        }
        if !route.path.starts_with('/') {
            problems.push(Problem::new(&key("path"), "must start with /"));
        }
        for (i, host) in route.hosts.iter().enumerate() {
            if let Err(why) = check_host_pattern(host) {
                problems.push(Problem::new(&key(&format!("hosts.{i}")), why));
            }
        }
        for (binding, name, kind) in [
            ("rate_limit", &route.rate_limit, PluginKind::RateLimit),
            ("cache", &route.cache, PluginKind::CacheRules),
        ] {
            let Some(name) = name else { continue };
            match self.plugins.get(name) {
                None => problems.push(Problem::new(
                    &key(binding),
                    format!("no plugin named {name:?} in [plugins]"),
                )),
                Some(plugin) if plugin.kind != kind => problems.push(Problem::new(
                    &key(binding),
                    format!(
                        "plugin {name:?} is a {} plugin, not a {kind} plugin",
                        plugin.kind
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}

/// Two routes with the same host and path prefix would make the second unreachable.
fn check_route_overlaps(routes: &[RouteConfig], problems: &mut Vec<Problem>) {
    let mut seen: HashSet<(String, &str)> = HashSet::new();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (index, route) in routes.iter().enumerate() {
        let hosts: Vec<String> = if route.hosts.is_empty() {
            vec!["*".into()]
        } else {
            route.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
        };
        for host in hosts {
            if !seen.insert((host.clone(), route.path.as_str())) {
                problems.push(Problem::new(
                    &format!("routes.{index}.path"),
                    format!(
                        "host {host} and path {} are already routed by an earlier route",
                        route.path
                    ),
                ));
            }
        }
        if let Some(name) = &route.name
            && !names.insert(name)
        {
            problems.push(Problem::new(
                &format!("routes.{index}.name"),
                "is used by another route",
            ));
        }
    }
}

fn check_upstream(name: &str, upstream: &UpstreamConfig, problems: &mut Vec<Problem>) {
    let key = |field: &str| format!("upstreams.{name}.{field}");
    if upstream.servers.is_empty() {
        problems.push(Problem::new(&key("servers"), "needs at least one server"));
    }
    for (i, server) in upstream.servers.iter().enumerate() {
        if let Err(why) = check_server_addr(server.addr()) {
            problems.push(Problem::new(&key(&format!("servers.{i}")), why));
        }
        if !(1..=MAX_WEIGHT).contains(&server.weight()) {
            problems.push(Problem::new(
                &key(&format!("servers.{i}.weight")),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
        }
    }
    if upstream.balance == Balance::Hash
        && let Err(why) = check_hash_key(&upstream.hash_key)
    {
        problems.push(Problem::new(&key("hash_key"), why));
    }
    for (field, value) in [
        ("connect_timeout", upstream.connect_timeout),
        ("response_header_timeout", upstream.response_header_timeout),
        ("body_idle_timeout", upstream.body_idle_timeout),
        ("keepalive", upstream.keepalive),
    ] {
        check_positive(&key(field), value, problems);
    }
    if let Some(check) = &upstream.health_check {
        if !check.path.starts_with('/') {
            problems.push(Problem::new(&key("health_check.path"), "must start with /"));
        }
        check_positive(&key("health_check.interval"), check.interval, problems);
        check_positive(&key("health_check.timeout"), check.timeout, problems);
        for (field, value) in [("rise", check.rise), ("fall", check.fall)] {
            if value == 0 {
                problems.push(Problem::new(
                    &key(&format!("health_check.{field}")),
                    "must be at least 1",
                ));
            }
        }
    }
    if upstream.eject.failures > 0 {
        check_positive(&key("eject.cooldown"), upstream.eject.cooldown, problems);
    }
}

fn check_plugin(name: &str, plugin: &PluginConfig, problems: &mut Vec<Problem>) {
    let key = |field: &str| format!("plugins.{name}.{field}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        problems.push(Problem::new(
            &format!("plugins.{name}"),
            "names may use letters, digits, - and _",
        ));
    }
    if let Some(builtin) = plugin.source.strip_prefix("builtin:") {
        match policy::builtin::find(builtin) {
            None => {
                let known: Vec<&str> = policy::builtin::BUILTINS.iter().map(|b| b.name).collect();
                problems.push(Problem::new(
                    &key("source"),
                    format!(
                        "no built-in plugin {builtin:?} (built in: {})",
                        list(&known)
                    ),
                ));
            }
            Some(found) if found.kind != plugin.kind => problems.push(Problem::new(
                &key("kind"),
                format!("builtin:{builtin} is a {} plugin", found.kind),
            )),
            Some(_) => {}
        }
    } else if plugin.source.is_empty() {
        problems.push(Problem::new(
            &key("source"),
            "needs builtin:NAME or the path of a .wasm file",
        ));
    }
    check_positive(&key("deadline"), plugin.deadline, problems);
    if plugin.deadline > Duration::from_secs(1) {
        problems.push(Problem::new(
            &key("deadline"),
            "must be at most 1s: plugins run on the request path",
        ));
    }
    let memory = plugin.memory.as_u64();
    if !(1 << 20..=policy::MAX_MEMORY as u64).contains(&memory) {
        problems.push(Problem::new(
            &key("memory"),
            "must be between 1 MiB and 64 MiB",
        ));
    }
}

/// The default certificate, the sites and the ACME settings of `edge.tls`.
fn check_tls_certificates(tls: &TlsConfig, plain_listener: bool, problems: &mut Vec<Problem>) {
    match (&tls.cert, &tls.key) {
        (Some(_), None) => {
            problems.push(Problem::new("edge.tls.key", "is needed with edge.tls.cert"))
        }
        (None, Some(_)) => {
            problems.push(Problem::new("edge.tls.cert", "is needed with edge.tls.key"))
        }
        (None, None) if tls.sites.is_empty() && tls.on_demand.is_none() => {
            problems.push(Problem::new(
                "edge.tls.cert",
                "needs a certificate: give cert and key, sites (tls = \"auto\" for ACME) or on_demand",
            ))
        }
        _ => {}
    }
    let mut seen = HashSet::new();
    for (index, site) in tls.sites.iter().enumerate() {
        let key = format!("edge.tls.sites.{index}");
        if site.hosts.is_empty() {
            problems.push(Problem::new(
                &format!("{key}.hosts"),
                "needs at least one host name",
            ));
        }
        for host in &site.hosts {
            let mut fail = |why: String| problems.push(Problem::new(&format!("{key}.hosts"), why));
            if let Err(why) = check_host_pattern(host) {
                fail(why);
            } else if site.tls == Some(SiteTls::Auto) && host.starts_with("*.") {
                fail(format!(
                    "{host:?}: wildcard names need the DNS-01 challenge, which gatehouse does not answer; \
                     list the names, or give cert and key"
                ));
            } else if !seen.insert(host.to_ascii_lowercase()) {
                fail(format!("{host:?} belongs to another site too"));
            }
        }
        match (site.tls, &site.cert, &site.key) {
            (Some(SiteTls::Auto), None, None) | (None, Some(_), Some(_)) => {}
            (Some(SiteTls::Auto), _, _) => problems.push(Problem::new(
                &format!("{key}.tls"),
                "\"auto\" obtains the certificate: leave out cert and key",
            )),
            (None, _, _) => problems.push(Problem::new(
                &format!("{key}.cert"),
                "needs cert and key, or tls = \"auto\"",
            )),
        }
    }
    if let Some(on_demand) = &tls.on_demand {
        check_on_demand(on_demand, problems);
    }
    if !tls.uses_acme() {
        return;
    }
    let acme = &tls.acme;
    let url = acme.directory_url();
    if !url.starts_with("https://") {
        problems.push(Problem::new(
            "edge.tls.acme.directory",
            format!(
                "{url:?} is neither \"letsencrypt\", \"letsencrypt-staging\" nor an https:// URL"
            ),
        ));
    }
    if acme.challenges.is_empty() {
        problems.push(Problem::new(
            "edge.tls.acme.challenges",
            "needs at least one challenge type",
        ));
    }
    if !plain_listener && acme.challenges == [ChallengeKind::Http01] {
        problems.push(Problem::new(
            "edge.tls.acme.challenges",
            "http-01 is answered on a plain listener: configure edge.listen or edge.redirect",
        ));
    }
    check_positive("edge.tls.acme.retry_after", acme.retry_after, problems);
}

/// `edge.tls.on_demand`: something must decide which names get a certificate.
fn check_on_demand(on_demand: &OnDemandConfig, problems: &mut Vec<Problem>) {
    const KEY: &str = "edge.tls.on_demand";
    if on_demand.allow.is_empty() && on_demand.ask.is_none() {
        problems.push(Problem::new(
            &format!("{KEY}.allow"),
            "needs names (or an ask URL): otherwise any name a client sends would cost an order",
        ));
    }
    for (index, name) in on_demand.allow.iter().enumerate() {
        if let Err(why) = check_host_pattern(name) {
            problems.push(Problem::new(&format!("{KEY}.allow.{index}"), why));
        }
    }
    let web_url = |url: &str| {
        reqwest::Url::parse(url).is_ok_and(|url| matches!(url.scheme(), "http" | "https"))
    };
    if let Some(ask) = &on_demand.ask
        && !web_url(ask)
    {
        problems.push(Problem::new(
            &format!("{KEY}.ask"),
            format!("{ask:?} is not an http:// or https:// URL"),
        ));
    }
    if on_demand.max_orders == 0 {
        problems.push(Problem::new(
            &format!("{KEY}.max_orders"),
            "must be at least 1 (leave out on_demand to turn it off)",
        ));
    }
    check_positive(&format!("{KEY}.per"), on_demand.per, problems);
}

fn check_positive(key: &str, value: Duration, problems: &mut Vec<Problem>) {
    if value.is_zero() {
        problems.push(Problem::new(key, "must be longer than zero"));
    }
}

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
fn check_server_addr(addr: &str) -> Result<(), String> {
    let authority: Authority = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not host:port"))?;
    if authority.port_u16().is_none() {
        return Err(format!("{addr:?} needs a port (host:port)"));
    }
    if authority.as_str().contains('@') {
        return Err(format!("{addr:?} must not carry credentials"));
    }
    Ok(())
}

/// `example.com`, or `*.example.com` for any subdomain.
fn check_host_pattern(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or *.domain pattern"))
    }
}

fn check_hash_key(key: &str) -> Result<(), String> {
    if key == "client_ip" {
        return Ok(());
    }
    match key.strip_prefix("header:") {
        Some(name) if HeaderName::from_bytes(name.as_bytes()).is_ok() => Ok(()),
        _ => Err(format!(
            "{key:?} is neither \"client_ip\" nor \"header:NAME\""
        )),
    }
}

/// A URL the shared tier's client accepts, with a scheme it is meant for.
fn check_redis_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 4] = ["redis", "rediss", "redis-cluster", "rediss-cluster"];
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if !SCHEMES.contains(&scheme) {
        return Err(format!("scheme {scheme:?}"));
    }
    fred::prelude::Config::from_url(url)
        .map(|_| ())
        .map_err(|err| err.details().to_string())
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn keys(config: &Config) -> Vec<String> {
        config
            .validate()
            .into_iter()
            .map(|p| p.key.join("."))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), vec![]);
    }

    #[test]
    fn route_to_unknown_upstream_is_named() {
        let mut config = Config::default();
        config.routes[0].upstream = "nope".into();
        let problems = config.validate();
        assert_eq!(problems[0].key.join("."), "routes.0.upstream");
        assert!(
            problems[0].message.contains("\"nope\""),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn server_addresses_need_ports() {
        let mut config = Config::default();
        let app = config.upstreams.get_mut("app").unwrap();
        app.servers = vec![
            ServerConfig::Addr("localhost".into()),
            ServerConfig::Addr("[::1]:80".into()),
        ];
        assert_eq!(keys(&config), ["upstreams.app.servers.0"]);
    }

    #[test]
    fn duplicate_listeners_and_routes_are_refused() {
        let mut config = Config::default();
        config.admin.listen = config.edge.listen[0];
        config.routes.push(config.routes[0].clone());
        config.routes[1].name = None;
        assert_eq!(keys(&config), ["admin.listen", "routes.1.path"]);
    }

    #[test]
    fn hash_key_must_be_client_ip_or_header() {
        let mut config = Config::default();
        let app = config.upstreams.get_mut("app").unwrap();
        app.balance = Balance::Hash;
        app.hash_key = "header:X-User".into();
        assert!(config.validate().is_empty());
        config.upstreams.get_mut("app").unwrap().hash_key = "cookie".into();
        assert_eq!(keys(&config), ["upstreams.app.hash_key"]);
    }
}
