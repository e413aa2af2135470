//! Routing: host, then the longest path prefix, to an upstream group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::HeaderValue;
use actix_web::http::uri::{PathAndQuery, Uri};

use super::browser_cache::BrowserCaching;
use super::client_ip::IpRules;
use super::cors::Cors;
use super::files::StaticRoot;
use super::security_headers::SecurityHeaders;
use crate::config::Config;
use crate::policy::{Plugin, Plugins};
use crate::upstream::UpstreamGroup;

/// The routes of one config generation, in match order.
pub struct Router {
    routes: Vec<Route>,
}

/// One route, ready to match.
pub struct Route {
    /// Name for logs and metrics.
    pub name: Arc<str>,
    hosts: Vec<HostPattern>,
    path: String,
    strip_prefix: bool,
    /// Where matching requests go.
    pub backend: Backend,
    /// The plugin that decides its rate limits.
    pub rate_limit: Option<Arc<Plugin>>,
    /// The plugin that decides what it caches.
    pub cache: Option<Arc<Plugin>>,
    /// `Cache-Control` for browsers, unless the route opted out.
    pub browser_cache: Option<BrowserCaching>,
    /// Security headers set and stripped on its answers.
    pub security_headers: SecurityHeaders,
    /// Its cross-origin policy, when it has one.
    pub cors: Option<Cors>,
    /// The methods it accepts (empty: any), and the `Allow` field saying so.
    methods: Vec<Method>,
    allow: Option<HeaderValue>,
    /// Whether paths with encoded slashes are refused.
    pub reject_encoded_slash: bool,
    /// Whether paths and queries must decode to UTF-8.
    pub utf8_only: bool,
    /// Which clients may use it.
    pub ip_rules: IpRules,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Longest pause while the client sends its body.
    pub body_timeout: Duration,
}

/// What answers a route's requests.
pub enum Backend {
    /// An upstream group.
    Upstream(Arc<UpstreamGroup>),
    /// Files under a directory.
    Files(Arc<StaticRoot>),
}

/// A host name to match: exact or `*.domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// `example.com` (lowercase).
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl Router {
    /// Builds the routes of `config` over `groups` and `plugins` (names were checked by config
    /// validation); route settings fall back to the global ones.
    pub fn new(
        config: &Config,
        groups: &BTreeMap<String, Arc<UpstreamGroup>>,
        plugins: &Plugins,
    ) -> Self {
        let plugin = |name: &Option<String>| name.as_deref().and_then(|n| plugins.get(n)).cloned();
        let global = config;
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, config)| Route {
                name: config.name_or_index(index).into(),
                hosts: config.hosts.iter().map(|h| HostPattern::parse(h)).collect(),
                path: config.path.clone(),
                strip_prefix: config.strip_prefix,
                backend: match &config.root {
                    Some(dir) => Backend::Files(Arc::new(StaticRoot::new(dir.clone()))),
                    None => Backend::Upstream(Arc::clone(&groups[&config.upstream])),
                },
                rate_limit: plugin(&config.rate_limit),
                cache: plugin(&config.cache),
                browser_cache: BrowserCaching::new(
                    config
                        .browser_cache
                        .as_ref()
                        .unwrap_or(&global.browser_cache),
                ),
                security_headers: SecurityHeaders::new(
                    config.security_headers.as_ref(),
                    &global.security_headers,
                ),
                max_body: config.max_body.unwrap_or(global.edge.max_body).as_u64(),
                body_timeout: global.edge.request_body_timeout,
                cors: config.cors.as_ref().map(Cors::new),
                methods: config
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect(),
                allow: (!config.methods.is_empty())
                    .then(|| {
                        HeaderValue::from_str(&config.methods.join(", ").to_ascii_uppercase()).ok()
                    })
                    .flatten(),
                reject_encoded_slash: config.reject_encoded_slash,
                utf8_only: config.utf8_only,
                ip_rules: IpRules::new(&config.allow_ips, &config.deny_ips),
            })
            .collect();
        // Exact hosts before wildcards before any-host; then longer prefixes first. The sort is
        // stable, so equal routes keep config order.
        routes.sort_by_key(|route| (route.host_rank(), std::cmp::Reverse(route.path.len())));
        Self { routes }
    }

    /// Every route, in match order.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route for `host` (without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.matches_host(host) && path.starts_with(&route.path))
    }
}

impl Route {
    /// `None` when the route accepts `method`; otherwise the `Allow` field to answer 405 with.
    pub fn refuses(&self, method: &Method) -> Option<&HeaderValue> {
        if self.methods.is_empty() || self.methods.contains(method) {
            None
        } else {
            self.allow.as_ref()
        }
    }

    fn host_rank(&self) -> u8 {
        if self.hosts.is_empty() {
            2
        } else if self
            .hosts
            .iter()
            .all(|h| matches!(h, HostPattern::Exact(_)))
        {
            0
        } else {
            1
        }
    }

    fn matches_host(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|pattern| pattern.matches(host))
    }

    /// The path and query to send upstream: unchanged, or without the route's prefix.
    pub fn upstream_path(&self, uri: &Uri) -> PathAndQuery {
        let original = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if !self.strip_prefix || self.path == "/" {
            return original;
        }
        let rest = original
            .as_str()
            .get(self.path.trim_end_matches('/').len()..)
            .unwrap_or("");
        let rebuilt = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        rebuilt.parse().unwrap_or(original)
    }
}

impl HostPattern {
    /// `pattern` (checked by config validation), case-insensitive.
    pub(crate) fn parse(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        match lower.strip_prefix('*') {
            Some(suffix) => Self::Suffix(suffix.to_string()),
            None => Self::Exact(lower),
        }
    }

    /// Whether `host` (without port) matches.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, ServerConfig, UpstreamConfig};
    use crate::upstream::build_groups;

    fn router(routes: &[(&[&str], &str, &str, bool)]) -> Router {
        let upstream = UpstreamConfig {
            servers: vec![ServerConfig::Addr("127.0.0.1:1".into())],
            ..UpstreamConfig::default()
        };
        let groups = build_groups(
            &BTreeMap::from([("a".into(), upstream.clone()), ("b".into(), upstream)]),
            &BTreeMap::new(),
        )
        .0;
        let configs: Vec<RouteConfig> = routes
            .iter()
            .map(|(hosts, path, name, strip)| RouteConfig {
                name: Some(name.to_string()),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                path: path.to_string(),
                upstream: "a".into(),
                strip_prefix: *strip,
                ..RouteConfig::default()
            })
            .collect();
        let config = Config {
            routes: configs,
            ..Config::default()
        };
        Router::new(&config, &groups, &Plugins::default())
    }

    fn name(router: &Router, host: &str, path: &str) -> Option<String> {
        router.find(host, path).map(|r| r.name.to_string())
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router(&[(&[], "/", "root", false), (&[], "/api/", "api", false)]);
        assert_eq!(name(&r, "x", "/api/users").as_deref(), Some("api"));
        assert_eq!(name(&r, "x", "/apix").as_deref(), Some("root"));
    }

    #[test]
    fn exact_hosts_beat_wildcards_beat_any() {
        let r = router(&[
            (&[], "/", "any", false),
            (&["*.example.com"], "/", "wild", false),
            (&["api.example.com"], "/", "exact", false),
        ]);
        assert_eq!(name(&r, "API.example.com", "/").as_deref(), Some("exact"));
        assert_eq!(name(&r, "www.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(name(&r, "example.com", "/").as_deref(), Some("any"));
    }

    #[test]
    fn no_match_without_catch_all() {
        let r = router(&[(&["a.test"], "/", "a", false)]);
        assert_eq!(name(&r, "b.test", "/"), None);
    }

    #[test]
    fn strip_prefix_keeps_the_query() {
        let r = router(&[(&[], "/api/", "api", true)]);
        let route = r.find("x", "/api/users").unwrap();
        let uri: Uri = "/api/users?id=1".parse().unwrap();
        assert_eq!(route.upstream_path(&uri).as_str(), "/users?id=1");
        let uri: Uri = "/api/".parse().unwrap();
        assert_eq!(route.upstream_path(&uri).as_str(), "/");
    }
}
