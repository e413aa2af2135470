//! The validate phase: what is refused before a request reaches routing. actix-http already
//! answers malformed heads (400), oversized heads (431), duplicate or conflicting
//! `Content-Length`/`Transfer-Encoding` (400) and missing `Host` on HTTP/1.1 (400); this adds
//! what a proxy in particular must not let through: targets naming another host, targets and
//! header sections over the configured limits, and paths that are malformed or climb above the
//! root.

use std::net::IpAddr;

use actix_web::http::Uri;
use actix_web::http::header::{ALLOW, HOST, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use percent_encoding::percent_decode_str;

use super::error::EdgeError;
use super::proxy::headers::content_length;
use super::router::Route;
use crate::config::EdgeConfig;

/// The request limits of `[edge]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    max_uri_length: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

/// What the path check learnt, for the route's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathFacts {
    /// The path has an encoded slash (`%2F`).
    pub encoded_slash: bool,
}

impl RequestLimits {
    /// The limits in `config`.
    pub fn new(config: &EdgeConfig) -> Self {
        Self {
            max_uri_length: config.max_uri_length,
            max_headers: config.max_headers,
            max_header_bytes: config.max_header_bytes.as_u64() as usize,
        }
    }

    /// Refuses a target or a header section over the limits.
    fn check(&self, req: &HttpRequest) -> Result<(), EdgeError> {
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > self.max_uri_length {
            return Err(EdgeError::UriTooLong);
        }
        let headers = req.headers();
        if headers.len() > self.max_headers {
            return Err(EdgeError::HeadersTooLarge);
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(EdgeError::HeadersTooLarge);
        }
        Ok(())
    }
}

/// The checks every request passes before routing, in order: its target against its `Host`,
/// the `limits`, its path. What the path check learnt, for the route's own rules.
pub fn check_request(req: &HttpRequest, limits: &RequestLimits) -> Result<PathFacts, EdgeError> {
    check_target(req)?;
    limits.check(req)?;
    check_path(req.path())
}

/// What the matched `route` refuses of `req` (from `client_ip`, with `path` as checked): its
/// address (403), an encoded slash or text that is not UTF-8 (400), a declared body over its limit (413), its method
/// (405 with `Allow`).
pub(crate) fn route_refusal(
    route: &Route,
    req: &HttpRequest,
    client_ip: Option<IpAddr>,
    path: PathFacts,
) -> Option<HttpResponse> {
    let refusal = if !route.ip_rules.permits(client_ip) {
        EdgeError::AddressRefused
    } else if path.encoded_slash && route.reject_encoded_slash {
        EdgeError::EncodedSlash
    } else if route.utf8_only && !decodes_to_utf8(req.uri()) {
        EdgeError::NotUtf8
    } else if content_length(req.headers()).is_some_and(|length| length > route.max_body) {
        EdgeError::BodyTooLarge
    } else {
        let allow = route.refuses(req.method())?;
        let mut answer = HttpResponse::MethodNotAllowed()
            .content_type("text/plain; charset=utf-8")
            .body("405 Method Not Allowed: this route does not accept this method\n");
        answer.headers_mut().insert(ALLOW, allow.clone());
        EdgeError::MethodNotAllowed.mark(&mut answer);
        return Some(answer);
    };
    Some(refusal.response())
}

/// Checks `path` (as received, percent-encoded): every `%` starts a valid escape, nothing
/// decodes to NUL, and dot-segments (plain or encoded) never climb above the root. It runs on
/// every request, so it decodes on the fly without allocating.
fn check_path(path: &str) -> Result<PathFacts, EdgeError> {
    let mut depth: usize = 0;
    let mut encoded_slash = false;
    for segment in path.split('/').skip(1) {
        let (mut length, mut dots) = (0, 0);
        let mut bytes = segment.bytes();
        while let Some(byte) = bytes.next() {
            let byte = match byte {
                b'%' => {
                    let high = bytes.next().and_then(hex).ok_or(EdgeError::BadPath)?;
                    let low = bytes.next().and_then(hex).ok_or(EdgeError::BadPath)?;
                    let decoded = high << 4 | low;
                    encoded_slash |= decoded == b'/';
                    decoded
                }
                byte => byte,
            };
            match byte {
                0 => return Err(EdgeError::BadPath),
                b'.' => dots += 1,
                _ => {}
            }
            length += 1;
        }
        match (length, dots) {
            (0, _) | (1, 1) => {}
            (2, 2) => depth = depth.checked_sub(1).ok_or(EdgeError::PathEscapesRoot)?,
            _ => depth += 1,
        }
    }
    Ok(PathFacts { encoded_slash })
}

/// Whether the path and the query of `uri`, percent-decoded, are UTF-8.
fn decodes_to_utf8(uri: &Uri) -> bool {
    let utf8 = |part: &str| percent_decode_str(part).decode_utf8().is_ok();
    utf8(uri.path()) && uri.query().is_none_or(utf8)
}

/// The value of one hex digit.
fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// Refuses a request whose target authority disagrees with its `Host` header: an HTTP/1
/// absolute-form target (`GET http://other/ HTTP/1.1`), or HTTP/2's `:authority` (RFC 9113
/// §8.3.1). Routing and the upstream must see one host, never a target smuggled past a
/// host-based rule.
fn check_target(req: &HttpRequest) -> Result<(), EdgeError> {
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

    #[test]
    fn paths_are_well_formed_and_stay_under_the_root() {
        assert_eq!(
            check_path("/a/b%20c/../d"),
            Ok(PathFacts {
                encoded_slash: false
            })
        );
        assert_eq!(
            check_path("/a%2Fb"),
            Ok(PathFacts {
                encoded_slash: true
            })
        );
        for (bad, why) in [
            ("/a/%zz", EdgeError::BadPath),
            ("/a/%4", EdgeError::BadPath),
            ("/a%00b", EdgeError::BadPath),
            ("/../etc/passwd", EdgeError::PathEscapesRoot),
            ("/a/%2e%2e/%2E%2E/x", EdgeError::PathEscapesRoot),
            ("/a/./../..", EdgeError::PathEscapesRoot),
        ] {
            assert_eq!(check_path(bad), Err(why), "{bad}");
        }
    }
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
