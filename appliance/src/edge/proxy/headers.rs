//! Header rules at the proxy boundary: hop-by-hop headers stop here (RFC 9110 §7.6.1), and the
//! upstream learns who the client was (`X-Forwarded-*`, `Forwarded`, RFC 7239).

use std::net::IpAddr;

use actix_web::http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, FORWARDED, HOST, HeaderMap, HeaderName, HeaderValue, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

use crate::edge::client_ip::ip_text;

/// Headers that describe one connection, never the message. `Expect` is answered by gatehouse
/// itself (the client already got its 100 Continue), so the server must not see it. Names, not
/// strings: a string is parsed into a name on every removal, twice per proxied request.
static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    EXPECT,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Transfer-Encoding` goes too: the sending side frames the body itself. `Content-Length` stays:
/// actix writes it from the body size and skips the copy, except on a 304, which keeps it.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (WebSocket handshakes).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && *name == UPGRADE))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

/// The declared `Content-Length`, when there is exactly one valid value.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the upstream is told about the original request.
pub(crate) struct Forwarding {
    pub(crate) client_ip: Option<IpAddr>,
    /// `http` or `https`.
    pub(crate) proto: &'static str,
    /// The host the client asked for (with port, as sent): its `Host` header, or HTTP/2's
    /// `:authority`.
    pub(crate) host: Option<HeaderValue>,
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`
/// (appended), and makes sure a `Host` header exists (HTTP/2 requests carry `:authority`).
pub(crate) fn add_forwarding(headers: &mut HeaderMap, forwarding: &Forwarding) {
    // Built with push_str, not format!: this runs for every proxied request.
    let ip = forwarding.client_ip.map(ip_text);
    if let Some(ip) = &ip {
        append_list(headers, &X_FORWARDED_FOR, ip);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(forwarding.proto),
    );
    if let Some(value) = &forwarding.host {
        headers.insert(X_FORWARDED_HOST.clone(), value.clone());
        if !headers.contains_key(HOST) {
            headers.insert(HOST, value.clone());
        }
    }
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    match (forwarding.client_ip, &ip) {
        (Some(IpAddr::V6(_)), Some(ip)) => {
            element.push_str("\"[");
            element.push_str(ip);
            element.push_str("]\"");
        }
        (_, Some(ip)) => element.push_str(ip),
        (_, None) => element.push_str("unknown"),
    }
    if let Some(host) = forwarding.host.as_ref().and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_token_or_quoted(&mut element, host);
    }
    element.push_str(";proto=");
    element.push_str(forwarding.proto);
    append_list(headers, &FORWARDED, &element);
}

/// Appends `item` to a comma-separated list header, merging repeated headers into one.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let mut value = String::new();
    for existing in headers.get_all(name).filter_map(|v| v.to_str().ok()) {
        value.push_str(existing);
        value.push_str(", ");
    }
    let value = if value.is_empty() {
        HeaderValue::from_str(item)
    } else {
        HeaderValue::from_str(&(value + item))
    };
    if let Ok(value) = value {
        headers.insert(name.clone(), value);
    }
}

/// RFC 7239 values must be quoted unless they are tokens (a `:` in host:port is not).
fn push_token_or_quoted(out: &mut String, value: &str) {
    let token = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        out.push_str(value);
    } else {
        out.push('"');
        out.extend(value.chars().filter(|c| !matches!(c, '"' | '\\')));
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn keeps_upgrade_for_websockets() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(headers.get(CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn appends_forwarding_headers() {
        let mut headers = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "example.com:8080"),
        ]);
        let forwarding = Forwarding {
            client_ip: Some("2001:db8::1".parse().unwrap()),
            proto: "https",
            host: Some(HeaderValue::from_static("example.com:8080")),
        };
        add_forwarding(&mut headers, &forwarding);
        assert_eq!(
            headers.get(&X_FORWARDED_FOR).unwrap(),
            "10.0.0.1, 2001:db8::1"
        );
        assert_eq!(headers.get(&X_FORWARDED_PROTO).unwrap(), "https");
        assert_eq!(headers.get(&X_FORWARDED_HOST).unwrap(), "example.com:8080");
        assert_eq!(
            headers.get(FORWARDED).unwrap(),
            "for=\"[2001:db8::1]\";host=\"example.com:8080\";proto=https"
        );
    }

    #[test]
    fn sets_host_for_http2_requests() {
        let mut headers = HeaderMap::new();
        let forwarding = Forwarding {
            client_ip: None,
            proto: "https",
            host: Some(HeaderValue::from_static("a.test")),
        };
        add_forwarding(&mut headers, &forwarding);
        assert_eq!(headers.get(HOST).unwrap(), "a.test");
        assert_eq!(
            headers.get(FORWARDED).unwrap(),
            "for=unknown;host=a.test;proto=https"
        );
    }
}
