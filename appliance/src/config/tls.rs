//! `[edge.tls]`: the HTTPS listeners, their certificates (from files, or obtained and renewed
//! over ACME) and which certificate a handshake gets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::durations;

/// HTTPS listeners and their certificates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS listen addresses. Default `["0.0.0.0:8443"]`.
    #[serde(default = "TlsConfig::default_listen")]
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first: the default certificate, for names no site claims
    /// and clients that send no name. Needs `key`. Default: none.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1). Default: none.
    pub key: Option<PathBuf>,
    /// How often certificate and key files are checked for changes (SIGHUP reloads at once).
    /// Default `"5s"`.
    #[serde(with = "durations", default = "TlsConfig::default_reload_interval")]
    pub reload_interval: Duration,
    /// Sites by host name, each with its own certificate: `tls = "auto"` (ACME) or
    /// `cert` and `key` files. Default: none.
    #[serde(default)]
    pub sites: Vec<TlsSite>,
    /// A handshake for a name no site claims: `"default"` serves the default certificate (a
    /// handshake failure when there is none), `"reject"` fails the handshake.
    /// Default `"default"`.
    #[serde(default)]
    pub unknown_names: UnknownNames,
    /// The ACME certificate authority of the `tls = "auto"` sites and on-demand names.
    #[serde(default)]
    pub acme: AcmeConfig,
    /// Certificates obtained at the first handshake naming a host no site lists, for names
    /// that pass `allow` and the `ask` URL. Default: off.
    pub on_demand: Option<OnDemandConfig>,
}

impl TlsConfig {
    fn default_listen() -> Vec<SocketAddr> {
        vec![SocketAddr::from(([0, 0, 0, 0], 8443))]
    }
    fn default_reload_interval() -> Duration {
        Duration::from_secs(5)
    }

    /// The sites whose certificates come over ACME.
    pub fn auto_sites(&self) -> impl Iterator<Item = &TlsSite> {
        self.sites
            .iter()
            .filter(|site| site.tls == Some(SiteTls::Auto))
    }

    /// Whether any certificate comes over ACME (a `tls = "auto"` site, or on demand).
    pub fn uses_acme(&self) -> bool {
        self.auto_sites().next().is_some() || self.on_demand.is_some()
    }
}

/// `[edge.tls.on_demand]`: which names get a certificate at their first handshake, and how
/// many new ones may be ordered. A name must pass `allow` (when given) and `ask` (when given);
/// one of the two is required, or any name a client sends would cost an order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnDemandConfig {
    /// Names that may get one: `shop.example.com`, or `*.example.com` for any name under
    /// `example.com`. Default: none (then `ask` decides alone).
    #[serde(default)]
    pub allow: Vec<String>,
    /// An http(s) URL asked about each new name as `?domain=NAME`: a 2xx answer allows it,
    /// anything else (or no answer within 5 s) refuses it. Default: none.
    pub ask: Option<String>,
    /// New certificates ordered at most this many times per `per`; names beyond it get the
    /// default certificate until the window moves on. Default `10`.
    #[serde(default = "OnDemandConfig::default_max_orders")]
    pub max_orders: u32,
    /// The window of `max_orders`. Default `"1h"`.
    #[serde(with = "durations", default = "OnDemandConfig::default_per")]
    pub per: Duration,
}

impl OnDemandConfig {
    fn default_max_orders() -> u32 {
        10
    }

    fn default_per() -> Duration {
        Duration::from_secs(3600)
    }
}

/// Host names served with one certificate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSite {
    /// The names (`example.com`, `*.example.com` with files) the certificate covers. Required.
    pub hosts: Vec<String>,
    /// `"auto"`: obtain and renew the certificate over ACME. Leave out to give files.
    pub tls: Option<SiteTls>,
    /// PEM certificate chain file, leaf first (without `tls = "auto"`).
    pub cert: Option<PathBuf>,
    /// PEM private key file (without `tls = "auto"`).
    pub key: Option<PathBuf>,
}

impl TlsSite {
    /// The name under which the site's certificate is kept: its hosts, in order.
    pub fn id(&self) -> String {
        self.hosts.join(",")
    }
}

/// Where a site's certificate comes from, when not from files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteTls {
    /// Obtained and renewed over ACME.
    Auto,
}

/// What a handshake naming no configured site gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownNames {
    /// The default certificate (`edge.tls.cert`), or a handshake failure without one.
    #[default]
    Default,
    /// A handshake failure.
    Reject,
}

/// The ACME certificate authority and how to talk to it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// `"letsencrypt"`, `"letsencrypt-staging"`, or the URL of any ACME directory.
    /// Default `"letsencrypt"`.
    pub directory: String,
    /// Contact address given to the CA (expiry notices). Default: none.
    pub email: Option<String>,
    /// A PEM CA certificate to trust for the directory's own HTTPS, for a private CA.
    /// Default: none (the system's roots).
    pub ca_root: Option<PathBuf>,
    /// Challenge types in order of preference: `"tls-alpn-01"` (answered on the TLS
    /// listener, port 443) and `"http-01"` (answered on the plain listeners, port 80).
    /// Default `["tls-alpn-01", "http-01"]`.
    pub challenges: Vec<ChallengeKind>,
    /// Wait after a failed attempt; it doubles with each failure up to `"6h"`. Default `"1m"`.
    #[serde(with = "durations")]
    pub retry_after: Duration,
    /// A directory the certificates are also written to as PEM files (`SITE.crt`, `SITE.key`,
    /// keys readable only by gatehouse's user), for other tools. Default: none.
    pub export_dir: Option<PathBuf>,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: "letsencrypt".into(),
            email: None,
            ca_root: None,
            challenges: vec![ChallengeKind::TlsAlpn01, ChallengeKind::Http01],
            retry_after: Duration::from_secs(60),
            export_dir: None,
        }
    }
}

impl AcmeConfig {
    /// Let's Encrypt's production directory.
    pub const LETSENCRYPT: &'static str = "https://acme-v02.api.letsencrypt.org/directory";
    /// Let's Encrypt's staging directory (untrusted certificates, generous limits).
    pub const LETSENCRYPT_STAGING: &'static str =
        "https://acme-staging-v02.api.letsencrypt.org/directory";

    /// The directory URL, with the short names resolved.
    pub fn directory_url(&self) -> &str {
        match self.directory.as_str() {
            "letsencrypt" => Self::LETSENCRYPT,
            "letsencrypt-staging" => Self::LETSENCRYPT_STAGING,
            url => url,
        }
    }
}

/// An ACME challenge type gatehouse answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeKind {
    /// A self-signed certificate on the TLS listener, for ALPN `acme-tls/1` (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// A token under `/.well-known/acme-challenge/` on the plain listeners.
    #[serde(rename = "http-01")]
    Http01,
}
