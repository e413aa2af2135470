//! Browser caching: `Cache-Control` for clients, by content type or path pattern, on responses
//! whose upstream said nothing (or always, when the route says the rules win). nginx's
//! `expires` and `add_header Cache-Control` per `location`, as the reference deployment set
//! them: HTML 5 minutes, CSS and JavaScript a year (immutable), images six months, fonts a year.
//!
//! It applies on the way to the client only: the cache's own freshness still comes from what
//! the upstream said. Responses that set a cookie and answers to requests with credentials are
//! left alone, so a personal response is never marked for shared caches.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, SET_COOKIE,
};
use wildmatch::WildMatch;

use crate::config::{BrowserCacheConfig, BrowserCacheRule};

/// A route's rules, ready to apply.
pub struct BrowserCaching {
    rules: Vec<Rule>,
    override_upstream: bool,
}

struct Rule {
    /// Media types (`text/html`) or type prefixes (`image/`); empty for any.
    types: Vec<String>,
    /// Path patterns (`*` for any run of characters); empty for any.
    paths: Vec<WildMatch>,
    value: HeaderValue,
}

impl BrowserCaching {
    /// The rules of `config` (checked by config validation), or `None` when they are off.
    pub fn new(config: &BrowserCacheConfig) -> Option<Self> {
        let rules: Vec<Rule> = config.rules.iter().filter_map(Rule::new).collect();
        (config.enabled && !rules.is_empty()).then_some(Self {
            rules,
            override_upstream: config.override_upstream,
        })
    }

    /// Sets `Cache-Control` on `response` to `req` from the first rule that matches.
    pub(crate) fn apply<B>(&self, req: &HttpRequest, response: &mut actix_web::HttpResponse<B>) {
        let headers = response.headers();
        if !cacheable_status(response.status())
            || (headers.contains_key(CACHE_CONTROL) && !self.override_upstream)
            || headers.contains_key(SET_COOKIE)
            || req.headers().contains_key(AUTHORIZATION)
        {
            return;
        }
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.matches(&media_type, req.path()))
        {
            response
                .headers_mut()
                .insert(CACHE_CONTROL, rule.value.clone());
        }
    }
}

impl Rule {
    fn new(config: &BrowserCacheRule) -> Option<Self> {
        Some(Self {
            types: config
                .types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            paths: config.paths.iter().map(|p| WildMatch::new(p)).collect(),
            value: HeaderValue::from_str(&config.cache_control).ok()?,
        })
    }

    fn matches(&self, media_type: &str, path: &str) -> bool {
        let type_matches = self.types.is_empty()
            || self.types.iter().any(|wanted| {
                if wanted.ends_with('/') {
                    media_type.starts_with(wanted.as_str())
                } else {
                    media_type == wanted
                }
            });
        let path_matches = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path));
        type_matches && path_matches
    }
}

/// Statuses that caches may store by default (RFC 9110 §15.1) and nginx's `expires` marks.
fn cacheable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 304 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

#[cfg(test)]
mod tests {
    use actix_web::HttpResponse;
    use actix_web::test::TestRequest;

    use super::*;

    fn with_type(content_type: &str) -> HttpResponse {
        let mut response = HttpResponse::Ok().finish();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        response
    }

    fn applied(rules: &BrowserCaching, path: &str, mut response: HttpResponse) -> Option<String> {
        let req = TestRequest::get().uri(path).to_http_request();
        rules.apply(&req, &mut response);
        response
            .headers()
            .get(CACHE_CONTROL)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn the_defaults_follow_the_reference_deployment() {
        let rules = BrowserCaching::new(&BrowserCacheConfig::default()).unwrap();
        let year = Some("public, max-age=31536000, immutable".to_string());
        let of = |path: &str, content_type: &str| applied(&rules, path, with_type(content_type));
        assert_eq!(
            of("/", "text/html; charset=utf-8").as_deref(),
            Some("public, max-age=300")
        );
        assert_eq!(of("/app.css", "text/css"), year);
        assert_eq!(of("/app.js", "text/javascript"), year);
        assert_eq!(of("/f.woff2", "font/woff2"), year);
        assert_eq!(
            of("/logo.png", "image/png").as_deref(),
            Some("public, max-age=15552000, immutable")
        );
        assert_eq!(of("/api/x", "application/json"), None);
    }

    #[test]
    fn the_upstream_the_personal_and_the_failed_keep_their_own() {
        let rules = BrowserCaching::new(&BrowserCacheConfig::default()).unwrap();
        let mut own = with_type("text/css");
        own.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        assert_eq!(applied(&rules, "/a.css", own).as_deref(), Some("no-cache"));
        let mut personal = with_type("text/html");
        personal
            .headers_mut()
            .insert(SET_COOKIE, HeaderValue::from_static("s=1"));
        assert_eq!(applied(&rules, "/", personal), None);
        let mut failed = with_type("text/html");
        *failed.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(applied(&rules, "/", failed), None);
    }

    #[test]
    fn path_patterns_and_overrides() {
        let config = BrowserCacheConfig {
            override_upstream: true,
            rules: vec![BrowserCacheRule {
                types: Vec::new(),
                paths: vec!["/static/*".into(), "*.map".into()],
                cache_control: "public, max-age=60".into(),
            }],
            ..BrowserCacheConfig::default()
        };
        let rules = BrowserCaching::new(&config).unwrap();
        let mut own = with_type("application/octet-stream");
        own.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(
            applied(&rules, "/static/x.bin", own).as_deref(),
            Some("public, max-age=60")
        );
        assert!(applied(&rules, "/app.js.map", with_type("text/plain")).is_some());
        assert!(applied(&rules, "/other", with_type("text/plain")).is_none());
        let off = BrowserCacheConfig {
            enabled: false,
            ..BrowserCacheConfig::default()
        };
        assert!(BrowserCaching::new(&off).is_none());
    }
}
