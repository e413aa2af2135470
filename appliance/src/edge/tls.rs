//! TLS for the edge: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3 only, and a certificate
//! that is swapped in place when its files change (or on SIGHUP). New handshakes get the new
//! certificate; established connections are not touched.

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

use crate::config::TlsConfig;
use crate::file_stamp::FileStamp;

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("certificate {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unreadable, holds no PEM key, or does not match the certificate.
    #[error("private key {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Which problem a [`TlsError`] is about, for config error messages.
impl TlsError {
    /// The config key the error belongs to.
    pub fn config_key(&self) -> &'static str {
        match self {
            Self::Certificate { .. } => "edge.tls.cert",
            Self::Key { .. } => "edge.tls.key",
        }
    }
}

/// The crypto provider of every TLS listener.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a certificate chain and its private key, checking that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: key.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| key_error(e.to_string()))?;
    CertifiedKey::from_der(chain, private_key, &provider()).map_err(|e| key_error(e.to_string()))
}

/// Serves the current certificate to every handshake and swaps it when the files change.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
    files: Mutex<Files>,
}

/// The files behind the certificate and the stamp they had when last loaded.
#[derive(Debug, Clone, PartialEq)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    stamp: Option<Stamp>,
}

/// The stamps of the certificate and key files.
#[derive(Debug, Clone, PartialEq)]
struct Stamp([FileStamp; 2]);

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Option<Self> {
        Some(Self([FileStamp::of(cert)?, FileStamp::of(key)?]))
    }
}

impl CertResolver {
    /// Loads the configured certificate.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        Self::from_files(&config.cert, &config.key)
    }

    /// Loads the certificate chain in `cert` and its private key in `key`.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let stamp = Stamp::of(cert, key);
        let certified = load_certified_key(cert, key)?;
        Ok(Self {
            current: ArcSwap::from_pointee(certified),
            files: Mutex::new(Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
                stamp,
            }),
        })
    }

    /// Points at (possibly new) files and loads them now. On error nothing changes: the old
    /// certificate keeps serving and the old files stay watched.
    pub fn reload_from(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Files {
            cert: config.cert.clone(),
            key: config.key.clone(),
            stamp: None,
        };
        self.load(&mut next)?;
        *files = next;
        Ok(())
    }

    /// Reloads when the files changed since the last load. Errors are logged and the old
    /// certificate keeps serving (a half-written file will be retried on the next poll).
    pub fn reload_if_changed(&self) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if Stamp::of(&files.cert, &files.key) == files.stamp {
            return;
        }
        if let Err(err) = self.load(&mut files) {
            warn!(error = %err, "certificate files changed but cannot be loaded; still serving the previous certificate");
        }
    }

    fn load(&self, files: &mut Files) -> Result<(), TlsError> {
        let stamp = Stamp::of(&files.cert, &files.key);
        let key = load_certified_key(&files.cert, &files.key)?;
        self.current.store(Arc::new(key));
        files.stamp = stamp;
        info!(cert = %files.cert.display(), "certificate loaded");
        Ok(())
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server config of the TLS listeners: TLS 1.2 and 1.3, certificate from `resolver`.
/// actix adds the ALPN protocols (h2, http/1.1).
pub fn server_config(resolver: Arc<CertResolver>) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver)
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
