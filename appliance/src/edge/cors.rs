//! Cross-origin resource sharing for a route (the Fetch standard's CORS protocol):
//!
//! - A request from an allowed `Origin` gets `Access-Control-Allow-Origin` (the origin itself,
//!   or `*` when any origin is allowed and credentials are not), `-Allow-Credentials` and
//!   `-Expose-Headers` as configured. Every answer of a CORS route varies by `Origin`.
//! - A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here, never sent
//!   upstream: 204 with the allowed methods, headers and max-age; 403 when the origin, method or
//!   a requested header is not allowed.

use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap, HeaderValue, ORIGIN,
    VARY,
};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use crate::config::CorsConfig;

/// A route's CORS policy, ready to apply.
pub struct Cors {
    origins: Vec<OriginPattern>,
    methods: Vec<String>,
    /// Allowed request headers, lowercase.
    headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

enum OriginPattern {
    Any,
    Exact(String),
    /// `https://*.example.com`: the scheme and the suffix `.example.com`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl Cors {
    /// The policy of `config` (checked by config validation).
    pub fn new(config: &CorsConfig) -> Self {
        let join = |items: &[String]| HeaderValue::from_str(&items.join(", ")).ok();
        let methods: Vec<String> = config
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        Self {
            origins: config
                .origins
                .iter()
                .map(|o| OriginPattern::parse(o))
                .collect(),
            allow_methods: join(&methods).unwrap_or(HeaderValue::from_static("GET")),
            methods,
            headers: config
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_headers: join(&config.headers).unwrap_or(HeaderValue::from_static("")),
            expose_headers: (!config.expose_headers.is_empty())
                .then(|| join(&config.expose_headers))
                .flatten(),
            credentials: config.credentials,
            max_age: HeaderValue::from(config.max_age.as_secs()),
        }
    }

    /// The answer to a preflight request, or `None` when `req` is not one.
    pub(crate) fn preflight(&self, req: &HttpRequest) -> Option<HttpResponse> {
        if !is_preflight(req) {
            return None;
        }
        let method = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let refuse = |why: &'static str| {
            let mut answer = HttpResponse::build(StatusCode::FORBIDDEN)
                .content_type("text/plain; charset=utf-8")
                .body(why);
            vary_on_origin(answer.headers_mut());
            Some(answer)
        };
        let Some(allowed_origin) = self.allowed_origin(req) else {
            return refuse("origin not allowed\n");
        };
        let method = method.to_str().unwrap_or("").trim().to_ascii_uppercase();
        if !self.methods.contains(&method) {
            return refuse("method not allowed cross-origin\n");
        }
        let requested = req
            .headers()
            .get(ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let unlisted = requested
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .any(|h| !h.is_empty() && !self.headers.contains(&h));
        if unlisted {
            return refuse("request header not allowed cross-origin\n");
        }
        let mut answer = HttpResponse::NoContent().finish();
        let headers = answer.headers_mut();
        vary_on_origin(headers);
        self.allow(headers, allowed_origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if !self.headers.is_empty() {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(answer)
    }

    /// Adds the CORS fields to the `response` to an actual request (a preflight's answer has
    /// its own).
    pub(crate) fn apply<B>(&self, req: &HttpRequest, response: &mut HttpResponse<B>) {
        if is_preflight(req) {
            return;
        }
        let allowed = self.allowed_origin(req);
        let headers = response.headers_mut();
        vary_on_origin(headers);
        if let Some(origin) = allowed {
            self.allow(headers, origin);
            if let Some(expose) = &self.expose_headers {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
    }

    fn allow(&self, headers: &mut HeaderMap, origin: HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// What `Access-Control-Allow-Origin` says to `req`, when its origin is allowed.
    fn allowed_origin(&self, req: &HttpRequest) -> Option<HeaderValue> {
        let origin = req.headers().get(ORIGIN)?;
        let text = origin.to_str().ok()?;
        let pattern = self.origins.iter().find(|p| p.matches(text))?;
        if matches!(pattern, OriginPattern::Any) && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        Some(origin.clone())
    }
}

impl OriginPattern {
    fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            return Self::Any;
        }
        let lower = pattern.trim_end_matches('/').to_ascii_lowercase();
        match lower.split_once("://*.") {
            Some((scheme, rest)) => Self::Subdomains {
                scheme: scheme.to_string(),
                suffix: format!(".{rest}"),
            },
            None => Self::Exact(lower),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::Exact(wanted) => origin == *wanted,
            Self::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix.as_str())),
        }
    }
}

/// Whether `req` is a CORS preflight: `OPTIONS` asking for another method.
fn is_preflight(req: &HttpRequest) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds `Origin` to `Vary` unless it is there.
fn vary_on_origin(headers: &mut HeaderMap) {
    let present = headers
        .get_all(VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("origin") || name.trim() == "*");
    if !present {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_by_subdomain_or_any() {
        let exact = OriginPattern::parse("https://App.example.com/");
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        let subdomains = OriginPattern::parse("https://*.example.com");
        assert!(subdomains.matches("https://a.b.example.com"));
        assert!(!subdomains.matches("https://example.com"));
        assert!(!subdomains.matches("https://evilexample.com"));
        assert!(!subdomains.matches("http://a.example.com"));
        assert!(OriginPattern::parse("*").matches("null"));
    }
}
