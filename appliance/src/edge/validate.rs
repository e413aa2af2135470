//! The validate phase: what is refused before a request reaches routing. actix-http already
//! answers malformed heads (400), oversized heads (431), duplicate or conflicting
//! `Content-Length`/`Transfer-Encoding` (400) and missing `Host` on HTTP/1.1 (400); this adds
//! what a proxy in particular must not let through.

use actix_web::HttpRequest;
use actix_web::http::header::{HOST, HeaderValue};

use super::error::EdgeError;

/// Refuses a request whose target authority disagrees with its `Host` header: an HTTP/1
/// absolute-form target (`GET http://other/ HTTP/1.1`), or HTTP/2's `:authority` (RFC 9113
/// §8.3.1). Routing and the upstream must see one host, never a target smuggled past a
/// host-based rule.
pub(crate) fn check_target(req: &HttpRequest) -> Result<(), EdgeError> {
    let (Some(target), Some(host)) = (req.uri().authority(), req.headers().get(HOST)) else {
        return Ok(());
    };
    if target
        .as_str()
        .as_bytes()
        .eq_ignore_ascii_case(host.as_bytes())
    {
        Ok(())
    } else {
        Err(EdgeError::MisdirectedTarget)
    }
}

/// The authority the client asked for: the `Host` header, or HTTP/2's `:authority`.
pub(crate) fn authority(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(HOST) {
        Some(host) => host.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// [`authority`] as a header value (the `Host` header itself when there is one: no copy).
pub(crate) fn authority_value(req: &HttpRequest) -> Option<HeaderValue> {
    match req.headers().get(HOST) {
        Some(host) => Some(host.clone()),
        None => HeaderValue::from_str(req.uri().authority()?.as_str()).ok(),
    }
}

/// The host part of an authority: `Example.com:8080` → `Example.com`, `[::1]:80` → `[::1]`.
pub(crate) fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn host_name_drops_the_port() {
        assert_eq!(host_name("example.com:8080"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:443"), "[::1]");
    }

    #[test]
    fn absolute_form_must_match_host() {
        let foreign = TestRequest::default()
            .uri("http://evil.test/x")
            .insert_header((HOST, "good.test"))
            .to_http_request();
        assert_eq!(check_target(&foreign), Err(EdgeError::MisdirectedTarget));
        let same = TestRequest::default()
            .uri("http://Good.test/x")
            .insert_header((HOST, "good.test"))
            .to_http_request();
        assert_eq!(check_target(&same), Ok(()));
    }

    #[test]
    fn http2_authority_must_match_host() {
        let mismatch = TestRequest::default()
            .version(actix_web::http::Version::HTTP_2)
            .uri("https://good.test/x")
            .insert_header((HOST, "evil.test"))
            .to_http_request();
        assert_eq!(check_target(&mismatch), Err(EdgeError::MisdirectedTarget));
        let only_authority = TestRequest::default()
            .version(actix_web::http::Version::HTTP_2)
            .uri("https://good.test/x")
            .to_http_request();
        assert_eq!(check_target(&only_authority), Ok(()));
    }
}
