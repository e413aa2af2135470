//! TLS towards an `https://` OTLP collector: the CAs trusted beside the system's
//! (`traces.ca_file`) and the client certificate for collectors that want one
//! (`traces.client_cert`, `traces.client_key`), read and checked from their files.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::TracesConfig;

/// The PEM material of `[traces]`, checked to parse (and the key to match its certificate).
#[derive(Debug)]
pub struct CollectorTls {
    /// CA certificates trusted beside the system's roots.
    pub ca: Option<Vec<u8>>,
    /// The client certificate chain and its private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A file of `[traces]` that cannot be used: its config key and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct TlsFileError {
    /// `traces.ca_file`, `traces.client_cert` or `traces.client_key`.
    pub key: &'static str,
    path: std::path::PathBuf,
    why: String,
}

impl CollectorTls {
    /// Reads the files `config` names (none for a plain `http://` endpoint).
    pub fn load(config: &TracesConfig) -> Result<Self, TlsFileError> {
        let ca = config.ca_file.as_deref().map(read_ca).transpose()?;
        let identity = match (&config.client_cert, &config.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read("traces.client_cert", cert_path)?;
                let key = read("traces.client_key", key_path)?;
                crate::edge::tls::certified_from_pem(&cert, &key)
                    .map_err(|why| TlsFileError::new("traces.client_cert", cert_path, why))?;
                Some((cert, key))
            }
            // Config validation refuses one without the other.
            _ => None,
        };
        Ok(Self { ca, identity })
    }
}

impl TlsFileError {
    fn new(key: &'static str, path: &Path, why: String) -> Self {
        Self {
            key,
            path: path.to_path_buf(),
            why,
        }
    }
}

/// The CA file: PEM, with at least one certificate.
fn read_ca(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read("traces.ca_file", path)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    let why = match parsed {
        Err(err) => err.to_string(),
        Ok(certificates) if certificates.is_empty() => "no PEM certificate in it".into(),
        Ok(_) => return Ok(pem),
    };
    Err(TlsFileError::new("traces.ca_file", path, why))
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|err| TlsFileError::new(key, path, err.to_string()))
}
