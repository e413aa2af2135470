//! Certificates and the ACME account as kept in the state store (tree `certificates`), and
//! their PEM export for other tools.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Tree};

/// A certificate obtained for a site: the chain and key as the CA and we made them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCertificate {
    /// PEM chain, leaf first.
    pub(crate) chain_pem: String,
    /// PEM PKCS#8 private key.
    pub(crate) key_pem: String,
    /// The directory that issued it.
    pub(crate) directory: String,
    /// When it was obtained (seconds since the epoch).
    pub(crate) issued_at: u64,
}

/// A stored certificate made ready to serve, with its validity.
#[derive(Debug, Clone)]
pub(crate) struct Usable {
    pub(crate) certified: std::sync::Arc<CertifiedKey>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl StoredCertificate {
    /// Parses the chain and key; an error says what is wrong.
    pub(crate) fn usable(&self) -> Result<Usable, String> {
        let certified = crate::edge::tls::certified_from_pem(
            self.chain_pem.as_bytes(),
            self.key_pem.as_bytes(),
        )?;
        let leaf = certified.cert.first().ok_or("the chain is empty")?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|err| format!("the certificate does not parse: {err}"))?;
        let at = |seconds: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
        let validity = parsed.validity();
        let (not_before, not_after) = (
            at(validity.not_before.timestamp()),
            at(validity.not_after.timestamp()),
        );
        Ok(Usable {
            certified: std::sync::Arc::new(certified),
            not_before,
            not_after,
        })
    }
}

/// Where the certificate of the configured site `id` is kept.
pub(crate) fn site_key(id: &str) -> String {
    format!("site/{id}")
}

const ON_DEMAND: &str = "on-demand/";

/// Where the certificate obtained on demand for `name` is kept.
pub(crate) fn on_demand_key(name: &str) -> String {
    format!("{ON_DEMAND}{name}")
}

/// The names certificates were obtained for on demand.
pub(crate) fn on_demand_names(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .scan_prefix(Tree::Certificates, ON_DEMAND.as_bytes())?
        .into_iter()
        .filter_map(|(key, _)| {
            let key = String::from_utf8(key).ok()?;
            Some(key.strip_prefix(ON_DEMAND)?.to_string())
        })
        .collect())
}

fn account_key(directory: &str) -> Vec<u8> {
    format!("account/{directory}").into_bytes()
}

/// The certificate kept under `key`, if any (a record that does not decode counts as none).
pub(crate) fn load(store: &dyn Store, key: &str) -> Result<Option<StoredCertificate>, StoreError> {
    Ok(store
        .get(Tree::Certificates, key.as_bytes())?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Keeps `certificate` under `key`, flushed at once: a certificate must never be obtained twice
/// because a crash lost it (CAs limit how many they issue).
pub(crate) fn save(
    store: &dyn Store,
    key: &str,
    certificate: &StoredCertificate,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(certificate).expect("a certificate record serializes");
    store.put(Tree::Certificates, key.as_bytes(), &bytes)?;
    store.flush()
}

/// The credentials of the account at `directory`, if one was made.
pub(crate) fn load_account(
    store: &dyn Store,
    directory: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    store.get(Tree::Certificates, &account_key(directory))
}

/// Keeps the credentials of the account at `directory`.
pub(crate) fn save_account(
    store: &dyn Store,
    directory: &str,
    credentials: &[u8],
) -> Result<(), StoreError> {
    store.put(Tree::Certificates, &account_key(directory), credentials)?;
    store.flush()
}

/// Writes `NAME.crt` (the chain) and `NAME.key` (mode 0600) into `dir`, each replaced
/// atomically, so a tool reading them never sees half a file.
pub(crate) fn export(
    dir: &Path,
    name: &str,
    certificate: &StoredCertificate,
) -> std::io::Result<()> {
    use crate::file_stamp::write_atomically_with_mode;
    std::fs::create_dir_all(dir)?;
    let key = dir.join(format!("{name}.key"));
    write_atomically_with_mode(&key, certificate.key_pem.as_bytes(), 0o600)?;
    let chain = dir.join(format!("{name}.crt"));
    write_atomically_with_mode(&chain, certificate.chain_pem.as_bytes(), 0o644)
}
