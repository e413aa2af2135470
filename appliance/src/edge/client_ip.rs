//! Who the client is, and whether a route lets it in.
//!
//! The client's address is the connection's peer, unless the peer is a configured trusted
//! proxy: then `X-Forwarded-For` is read right to left, skipping trusted proxies, and the first
//! address that is not one is the client (an address a client wrote itself further left is never
//! believed). Rate-limit plugins and the routes' IP lists see that address.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A list of networks: `10.0.0.0/8`, `2001:db8::/32`, or single addresses.
#[derive(Debug, Clone, Default)]
pub struct Networks(Vec<IpNet>);

/// A route's allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Networks,
    deny: Networks,
}

/// Parses one network or address; the error says what is wrong.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or network (CIDR, such as 10.0.0.0/8)"))
}

impl Networks {
    /// The networks in `texts` (checked by config validation).
    pub fn new(texts: &[String]) -> Self {
        Self(texts.iter().filter_map(|t| parse_network(t).ok()).collect())
    }

    /// Whether `ip` is in one of the networks.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of `req`: its peer, or when the peer is trusted, the last address in
    /// `X-Forwarded-For` that is not.
    pub(crate) fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.contains(peer) {
            return Some(peer);
        }
        let forwarded: Vec<&str> = req
            .headers()
            .get_all(&X_FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in forwarded.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        Some(client)
    }
}

impl IpRules {
    /// The lists of a route (checked by config validation).
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        Self {
            allow: Networks::new(allow),
            deny: Networks::new(deny),
        }
    }

    /// Whether `ip` may use the route: not denied, and allowed when there is an allow list. A
    /// request without a known address passes only routes without lists.
    pub(crate) fn permits(&self, ip: Option<IpAddr>) -> bool {
        let listed = !self.allow.0.is_empty() || !self.deny.0.is_empty();
        match ip {
            None => !listed,
            Some(ip) => {
                !self.deny.contains(ip) && (self.allow.0.is_empty() || self.allow.contains(ip))
            }
        }
    }
}

/// `ip` as `Display` writes it, without the formatting machinery (about 1,300 instructions for
/// an IPv4 address): it is written up to twice per request, for plugins and for the upstream.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(digits.format(octet));
    }
    text
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn networks(texts: &[&str]) -> Networks {
        Networks::new(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted = networks(&["10.0.0.0/8"]);
        let via = |peer: &str, forwarded: &str| {
            let mut request = TestRequest::get().peer_addr(peer.parse().unwrap());
            if !forwarded.is_empty() {
                request = request.insert_header(("x-forwarded-for", forwarded));
            }
            trusted.client_ip(&request.to_http_request()).unwrap()
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(
            via("203.0.113.9:1", "198.51.100.1"),
            ip("203.0.113.9"),
            "untrusted peer"
        );
        assert_eq!(via("10.0.0.2:1", "198.51.100.1"), ip("198.51.100.1"));
        assert_eq!(
            via("10.0.0.2:1", "6.6.6.6, 198.51.100.1, 10.0.0.3"),
            ip("198.51.100.1"),
            "the client's own claim further left is not believed"
        );
        assert_eq!(via("10.0.0.2:1", ""), ip("10.0.0.2"));
        assert_eq!(via("10.0.0.2:1", "junk"), ip("10.0.0.2"));
    }

    #[test]
    fn deny_wins_and_an_allow_list_admits_only_its_own() {
        let strings = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let rules = IpRules::new(
            &strings(&["192.0.2.0/24", "::1"]),
            &strings(&["192.0.2.66"]),
        );
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert!(rules.permits(ip("192.0.2.1")));
        assert!(rules.permits(ip("::1")));
        assert!(!rules.permits(ip("192.0.2.66")));
        assert!(!rules.permits(ip("198.51.100.1")));
        assert!(!rules.permits(None));
        assert!(IpRules::default().permits(None));
        assert!(parse_network("10.0.0.0/33").is_err());
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "203.0.113.7",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
            assert_eq!(ip_text(ip), text);
        }
    }
}
