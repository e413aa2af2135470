//! The answers to pending ACME challenges, shared by the order in progress (which arms them)
//! and the listeners (which serve them): HTTP-01 tokens for the plain listeners and TLS-ALPN-01
//! certificates for the TLS listener.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix_web::HttpResponse;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where HTTP-01 validation requests arrive (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Challenge answers in force.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: host name → the self-signed certificate that proves control of it.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The body answering an HTTP-01 request for `path`, when it names an armed token.
    pub fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        read(&self.http).get(token).cloned()
    }

    /// The answer to an HTTP-01 validation request for `path`, when it names an armed token.
    pub fn http_response(&self, path: &str) -> Option<HttpResponse> {
        let body = self.http_answer(path)?;
        Some(HttpResponse::Ok().content_type("text/plain").body(body))
    }

    /// The TLS-ALPN-01 certificate for `name`, while its challenge is armed.
    pub fn tls_alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        read(&self.tls_alpn).get(name).cloned()
    }

    /// Serves `key_authorization` at the token's path until the guard is dropped.
    pub(crate) fn arm_http(self: &Arc<Self>, token: &str, key_authorization: &str) -> Armed {
        write(&self.http).insert(token.to_string(), key_authorization.to_string());
        Armed {
            challenges: Arc::clone(self),
            entry: Entry::Http(token.to_string()),
        }
    }

    /// Serves a certificate carrying `digest` (SHA-256 of the key authorization) to
    /// `acme-tls/1` handshakes for `name` until the guard is dropped.
    pub(crate) fn arm_tls_alpn(
        self: &Arc<Self>,
        name: &str,
        digest: &[u8],
    ) -> Result<Armed, String> {
        let key = KeyPair::generate().map_err(|err| err.to_string())?;
        let mut params =
            CertificateParams::new(vec![name.to_string()]).map_err(|err| err.to_string())?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let certificate = params.self_signed(&key).map_err(|err| err.to_string())?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        // Not `CertifiedKey::from_der`: its check that key and certificate match parses the
        // certificate, and refuses the critical acmeIdentifier extension it does not know.
        let signing = crate::edge::tls::provider()
            .key_provider
            .load_private_key(private)
            .map_err(|err| err.to_string())?;
        let certified = CertifiedKey::new(vec![certificate.der().clone()], signing);
        write(&self.tls_alpn).insert(name.to_string(), Arc::new(certified));
        Ok(Armed {
            challenges: Arc::clone(self),
            entry: Entry::TlsAlpn(name.to_string()),
        })
    }
}

/// An armed challenge answer; dropping it disarms it.
pub(crate) struct Armed {
    challenges: Arc<Challenges>,
    entry: Entry,
}

enum Entry {
    Http(String),
    TlsAlpn(String),
}

impl Drop for Armed {
    fn drop(&mut self) {
        match &self.entry {
            Entry::Http(token) => {
                write(&self.challenges.http).remove(token);
            }
            Entry::TlsAlpn(name) => {
                write(&self.challenges.tls_alpn).remove(name);
            }
        }
    }
}

// A panic while holding these locks cannot leave a map half-changed: keep serving.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_as_long_as_their_guard() {
        let challenges = Arc::new(Challenges::default());
        let path = format!("{HTTP01_PREFIX}tok123");
        assert_eq!(challenges.http_answer(&path), None);
        let armed = challenges.arm_http("tok123", "tok123.thumb");
        assert_eq!(
            challenges.http_answer(&path).as_deref(),
            Some("tok123.thumb")
        );
        assert_eq!(challenges.http_answer("/tok123"), None);
        drop(armed);
        assert_eq!(challenges.http_answer(&path), None);

        let armed = challenges.arm_tls_alpn("example.com", &[7; 32]).unwrap();
        let served = challenges.tls_alpn_certificate("example.com").unwrap();
        assert_eq!(served.cert.len(), 1);
        assert!(challenges.tls_alpn_certificate("other.example").is_none());
        drop(armed);
        assert!(challenges.tls_alpn_certificate("example.com").is_none());
    }
}
