//! TLS for the edge: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only, and a certificate
//! per name picked by SNI. Certificates come from files (swapped in place when the files change,
//! or on SIGHUP) or over ACME ([`crate::acme`], which installs them here). New handshakes get
//! the new certificate; established connections are not touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::acme::{ACME_TLS_ALPN, Challenges};
use crate::config::{TlsConfig, UnknownNames};
use crate::file_stamp::FileStamp;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("certificate {}: {reason}", path.display())]
    Certificate {
        /// The config key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unreadable, holds no PEM key, or does not match the certificate.
    #[error("private key {}: {reason}", path.display())]
    Key {
        /// The config key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl TlsError {
    /// The config key the error belongs to.
    pub fn config_key(&self) -> &str {
        match self {
            Self::Certificate { key, .. } | Self::Key { key, .. } => key,
        }
    }
}

/// The crypto provider of every TLS listener.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Which part of a PEM certificate and key pair is wrong.
enum PemProblem {
    Chain(String),
    Key(String),
}

fn parse_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, PemProblem> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| PemProblem::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemProblem::Chain("no PEM certificate in it".into()));
    }
    let private_key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| PemProblem::Key(e.to_string()))?;
    CertifiedKey::from_der(chain, private_key, &provider())
        .map_err(|e| PemProblem::Key(e.to_string()))
}

/// A certificate chain and its private key, both PEM, checked to belong together.
pub fn certified_from_pem(chain: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    parse_pem(chain, key).map_err(|problem| match problem {
        PemProblem::Chain(why) => format!("certificate chain: {why}"),
        PemProblem::Key(why) => format!("private key: {why}"),
    })
}

/// A pair of files: a certificate chain and its private key.
#[derive(Debug, Clone, PartialEq)]
struct FilePair {
    /// The config key of the pair (`edge.tls` or `edge.tls.sites.N`).
    key: String,
    /// The names it is served for; empty for the default certificate.
    hosts: Vec<String>,
    cert: PathBuf,
    private_key: PathBuf,
}

impl FilePair {
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| e.to_string());
        let cert_error = |reason: String| TlsError::Certificate {
            key: format!("{}.cert", self.key),
            path: self.cert.clone(),
            reason,
        };
        let key_error = |reason: String| TlsError::Key {
            key: format!("{}.key", self.key),
            path: self.private_key.clone(),
            reason,
        };
        let chain = read(&self.cert).map_err(cert_error)?;
        let key = read(&self.private_key).map_err(key_error)?;
        parse_pem(&chain, &key).map_err(|problem| match problem {
            PemProblem::Chain(why) => cert_error(why),
            PemProblem::Key(why) => key_error(why),
        })
    }

    fn stamp(&self) -> Option<[FileStamp; 2]> {
        Some([
            FileStamp::of(&self.cert)?,
            FileStamp::of(&self.private_key)?,
        ])
    }
}

/// The file pairs of a config: the default certificate and the sites with files.
fn file_pairs(config: &TlsConfig) -> Vec<FilePair> {
    let default = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(FilePair {
            key: "edge.tls".into(),
            hosts: Vec::new(),
            cert: cert.clone(),
            private_key: key.clone(),
        }),
        _ => None,
    };
    let sites = config.sites.iter().enumerate().filter_map(|(index, site)| {
        Some(FilePair {
            key: format!("edge.tls.sites.{index}"),
            hosts: site.hosts.clone(),
            cert: site.cert.clone()?,
            private_key: site.key.clone()?,
        })
    });
    default.into_iter().chain(sites).collect()
}

/// What handshakes are answered with: swapped whole when anything changes.
#[derive(Debug, Default, Clone)]
struct Table {
    /// For names no site claims, and clients that send none.
    default: Option<Arc<CertifiedKey>>,
    /// From files, by lower-case name; `*.example.com` for a wildcard.
    files: HashMap<String, Arc<CertifiedKey>>,
    /// Obtained over ACME (sites and on-demand names), by lower-case name.
    obtained: HashMap<String, Arc<CertifiedKey>>,
    unknown: UnknownNames,
}

impl Table {
    /// The certificate made for `name`, if any (the default is not).
    fn own(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let wildcard = || {
            let (_, parent) = name.split_once('.')?;
            self.files.get(&format!("*.{parent}"))
        };
        self.files
            .get(&name)
            .or_else(|| self.obtained.get(&name))
            .or_else(wildcard)
    }

    fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(found) = name.and_then(|name| self.own(name)) {
            return Some(Arc::clone(found));
        }
        match self.unknown {
            UnknownNames::Default => self.default.clone(),
            UnknownNames::Reject => None,
        }
    }

    fn set_files(&mut self, hosts: &[String], certified: &Arc<CertifiedKey>) {
        if hosts.is_empty() {
            self.default = Some(Arc::clone(certified));
        }
        for host in hosts {
            self.files
                .insert(host.to_ascii_lowercase(), Arc::clone(certified));
        }
    }
}

/// Serves each handshake the certificate for its name, and swaps certificates as their files
/// change or ACME renews them.
#[derive(Debug)]
pub struct CertResolver {
    table: ArcSwap<Table>,
    /// The file pairs and the stamps they had when last loaded.
    files: Mutex<Vec<(FilePair, Option<[FileStamp; 2]>)>>,
    challenges: Arc<Challenges>,
}

impl CertResolver {
    /// Loads the configured certificate files (ACME sites have none until
    /// [`CertResolver::install`]).
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let resolver = Self::empty();
        resolver.reload_from(config)?;
        Ok(resolver)
    }

    /// Serves the certificate in `cert` (with its key in `key`) to every handshake; errors
    /// name `config_key`.cert or `config_key`.key.
    pub fn from_files(cert: &Path, key: &Path, config_key: &str) -> Result<Self, TlsError> {
        let pair = FilePair {
            key: config_key.to_string(),
            hosts: Vec::new(),
            cert: cert.to_owned(),
            private_key: key.to_owned(),
        };
        let resolver = Self::empty();
        resolver.set_files(&[], &Arc::new(pair.load()?));
        *resolver.files.lock().unwrap_or_else(|p| p.into_inner()) =
            vec![(pair.clone(), pair.stamp())];
        Ok(resolver)
    }

    fn empty() -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            files: Mutex::default(),
            challenges: Arc::default(),
        }
    }

    /// Takes (possibly new) files and settings and loads them now. On error nothing changes:
    /// the old certificates keep serving and the old files stay watched. Certificates
    /// obtained over ACME stay (the ACME names change only with a restart).
    pub fn reload_from(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::new();
        let mut table = Table {
            unknown: config.unknown_names,
            ..Table::default()
        };
        for pair in file_pairs(config) {
            let stamp = pair.stamp();
            table.set_files(&pair.hosts, &Arc::new(pair.load()?));
            next.push((pair, stamp));
        }
        self.table.rcu(|current| Table {
            obtained: current.obtained.clone(),
            ..table.clone()
        });
        for (pair, _) in &next {
            info!(cert = %pair.cert.display(), hosts = ?pair.hosts, "certificate loaded");
        }
        *files = next;
        Ok(())
    }

    /// Reloads the file pairs that changed since they were last loaded. Errors are logged and
    /// the old certificate keeps serving (a half-written file is retried on the next poll).
    pub fn reload_if_changed(&self) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        for (pair, stamp) in files.iter_mut() {
            let now = pair.stamp();
            if now == *stamp {
                continue;
            }
            match pair.load() {
                Ok(certified) => {
                    self.set_files(&pair.hosts, &Arc::new(certified));
                    *stamp = now;
                    info!(cert = %pair.cert.display(), "certificate reloaded");
                }
                Err(err) => warn!(error = %err,
                    "certificate files changed but cannot be loaded; still serving the previous certificate"),
            }
        }
    }

    fn set_files(&self, hosts: &[String], certified: &Arc<CertifiedKey>) {
        self.table.rcu(|table| {
            let mut table = Table::clone(table);
            table.set_files(hosts, certified);
            table
        });
    }

    /// Serves `certified`, obtained over ACME, for `hosts` from the next handshake on.
    pub fn install(&self, hosts: &[String], certified: &Arc<CertifiedKey>) {
        self.table.rcu(|table| {
            let mut table = Table::clone(table);
            for host in hosts {
                table
                    .obtained
                    .insert(host.to_ascii_lowercase(), Arc::clone(certified));
            }
            table
        });
    }

    /// Whether a handshake naming `name` gets a certificate made for it (not the default).
    pub fn covers(&self, name: &str) -> bool {
        self.table.load().own(name).is_some()
    }

    /// The answers to ACME challenges this resolver serves.
    pub fn challenges(&self) -> Arc<Challenges> {
        Arc::clone(&self.challenges)
    }

    /// The certificate a handshake naming `name` gets now.
    pub fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.table.load().lookup(name)
    }

    /// How many certificates are served (the default and one per site that has one).
    pub fn served(&self) -> usize {
        let table = self.table.load();
        let mut distinct: Vec<*const CertifiedKey> = table
            .files
            .values()
            .chain(table.obtained.values())
            .chain(table.default.iter())
            .map(Arc::as_ptr)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.len()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validating {
            // RFC 8737: only the challenge certificate answers an acme-tls/1 handshake.
            return self.challenges.tls_alpn_certificate(hello.server_name()?);
        }
        self.lookup(hello.server_name())
    }
}

/// A rustls server config: TLS 1.2 and 1.3, certificate from `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver)
}

/// The edge's: ALPN `acme-tls/1` too, for TLS-ALPN-01 (actix puts its own protocols, h2 and
/// http/1.1, before it).
pub fn edge_server_config(resolver: Arc<CertResolver>) -> ServerConfig {
    let mut config = server_config(resolver);
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config
}

/// Polls the certificate files every `interval` for the life of the resolver.
pub async fn watch(resolver: std::sync::Weak<CertResolver>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match resolver.upgrade() {
            Some(resolver) => resolver.reload_if_changed(),
            None => return,
        }
    }
}
