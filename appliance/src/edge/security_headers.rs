//! Security headers on every routed response, with secure defaults: what the reference
//! deployment's security middleware and nginx's `add_header ... always` set. Each header can be
//! changed or removed (`""`) globally and per route; the upstream's own value wins only where the
//! route says so. `Server` and `X-Powered-By` (and any other listed header) are stripped from
//! upstream responses, so the stack behind gatehouse is not advertised.

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderName, HeaderValue};

use crate::config::SecurityHeadersConfig;

/// The headers a route sets and strips, ready to apply.
pub struct SecurityHeaders {
    set: Vec<(HeaderName, HeaderValue)>,
    /// Strict-Transport-Security: sent on TLS, and on plain HTTP only when configured.
    hsts: Option<(HeaderValue, bool)>,
    strip: Vec<HeaderName>,
    upstream_wins: bool,
}

/// The defaults, by config field: secure, and compatible with ordinary sites.
pub const DEFAULTS: [(&str, &str); 8] = [
    ("content-security-policy", "default-src 'self'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-embedder-policy", "credentialless"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Strict-Transport-Security's default: a year.
pub const HSTS_DEFAULT: &str = "max-age=31536000";

impl SecurityHeaders {
    /// The route's settings over the global ones over the defaults (values were checked by
    /// config validation).
    pub fn new(route: Option<&SecurityHeadersConfig>, global: &SecurityHeadersConfig) -> Self {
        let value = |name: &str| -> Option<HeaderValue> {
            let chosen = route
                .and_then(|r| r.value(name))
                .or_else(|| global.value(name))
                .or_else(|| default_of(name))?;
            (!chosen.is_empty())
                .then(|| HeaderValue::from_str(chosen).ok())
                .flatten()
        };
        let set = DEFAULTS
            .iter()
            .filter_map(|(name, _)| Some((HeaderName::from_static(name), value(name)?)))
            .collect();
        let on_http = route
            .and_then(|r| r.strict_transport_security_on_http)
            .or(global.strict_transport_security_on_http)
            .unwrap_or(false);
        let strip = route
            .and_then(|r| r.strip.as_ref())
            .or(global.strip.as_ref())
            .map_or_else(
                || vec!["server".to_string(), "x-powered-by".to_string()],
                Clone::clone,
            );
        Self {
            set,
            hsts: value("strict-transport-security").map(|v| (v, on_http)),
            strip: strip
                .iter()
                .filter_map(|name| HeaderName::try_from(name.as_str()).ok())
                .collect(),
            upstream_wins: route
                .and_then(|r| r.upstream_wins)
                .or(global.upstream_wins)
                .unwrap_or(false),
        }
    }

    /// Sets and strips on `response`; `tls` says whether it goes out over TLS.
    pub(crate) fn apply<B>(&self, response: &mut HttpResponse<B>, tls: bool) {
        let headers = response.headers_mut();
        for name in &self.strip {
            headers.remove(name);
        }
        // Room for them all at once: growing one insert at a time rehashes the map repeatedly.
        headers.reserve(self.set.len() + 1);
        let hsts = self
            .hsts
            .as_ref()
            .filter(|(_, on_http)| tls || *on_http)
            .map(|(value, _)| (HeaderName::from_static("strict-transport-security"), value));
        for (name, value) in self.set.iter().map(|(n, v)| (n.clone(), v)).chain(hsts) {
            if !(self.upstream_wins && headers.contains_key(&name)) {
                headers.insert(name, value.clone());
            }
        }
    }
}

fn default_of(name: &str) -> Option<&'static str> {
    if name == "strict-transport-security" {
        return Some(HSTS_DEFAULT);
    }
    DEFAULTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with(pairs: &[(&'static str, &'static str)]) -> HttpResponse {
        let mut response = HttpResponse::Ok().finish();
        for (name, value) in pairs {
            response.headers_mut().insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        response
    }

    fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn defaults_are_set_hsts_only_on_tls_and_the_stack_is_not_advertised() {
        let headers = SecurityHeaders::new(None, &SecurityHeadersConfig::default());
        let mut plain = response_with(&[("server", "nginx"), ("x-powered-by", "PHP")]);
        headers.apply(&mut plain, false);
        for (name, value) in DEFAULTS {
            assert_eq!(header(&plain, name), Some(value), "{name}");
        }
        assert_eq!(header(&plain, "strict-transport-security"), None);
        assert_eq!(header(&plain, "server"), None);
        assert_eq!(header(&plain, "x-powered-by"), None);
        let mut tls = response_with(&[]);
        headers.apply(&mut tls, true);
        assert_eq!(
            header(&tls, "strict-transport-security"),
            Some(HSTS_DEFAULT)
        );
    }

    #[test]
    fn routes_override_and_remove_and_may_let_the_upstream_win() {
        let global = SecurityHeadersConfig {
            x_frame_options: Some("SAMEORIGIN".into()),
            strict_transport_security_on_http: Some(true),
            ..SecurityHeadersConfig::default()
        };
        let route = SecurityHeadersConfig {
            content_security_policy: Some(String::new()),
            upstream_wins: Some(true),
            ..SecurityHeadersConfig::default()
        };
        let headers = SecurityHeaders::new(Some(&route), &global);
        let mut response = response_with(&[("referrer-policy", "no-referrer")]);
        headers.apply(&mut response, false);
        assert_eq!(
            header(&response, "content-security-policy"),
            None,
            "removed"
        );
        assert_eq!(header(&response, "x-frame-options"), Some("SAMEORIGIN"));
        assert_eq!(header(&response, "referrer-policy"), Some("no-referrer"));
        assert_eq!(
            header(&response, "strict-transport-security"),
            Some(HSTS_DEFAULT)
        );
    }
}
