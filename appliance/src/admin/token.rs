//! The admin token. Unless `admin.token` is configured, one is generated on first start, printed
//! once, and kept only as its SHA-256 digest in the state store; `gatehouse admin-token rotate`
//! replaces it. A plain digest is enough: the token is 256 random bits, so there is no
//! dictionary to slow down (slow password hashes are for secrets people choose).
//!
//! Wrong tokens are limited per client address (GCRA); an address over the limit is refused
//! before its token is even looked at, so guessing cannot go on at full speed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::session::{self, Sessions};
use crate::edge::ratelimit::gcra::{Gcra, Quota};
use crate::store::{Store, StoreError, Tree};
use crate::upstream::clock_ms;

/// Where the digest lives in [`Tree::Meta`].
const DIGEST_KEY: &[u8] = b"admin_token_sha256";

/// Failed attempts one address may make: 10 at once, then one every 6 s.
const FAILURES: Quota = Quota {
    limit: 10,
    window: Duration::from_secs(60),
    burst: 10,
    cost: 1,
};

/// Addresses whose failures are remembered at most.
const FAILING_ADDRESSES: usize = 4096;

pub(super) type TokenDigest = [u8; 32];

/// Checks admin calls against the token.
pub(crate) struct AdminAuth {
    digest: ArcSwap<TokenDigest>,
    /// Where a rotated digest is kept; `None` when the token comes from the config.
    store: Option<Arc<dyn Store>>,
    failures: Gcra,
    /// The browsers logged in to the web UI with the token.
    pub(super) sessions: Sessions,
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token, or the wrong one.
    Unauthorized,
    /// Too many failures from this address; retry after this long.
    TooManyFailures(Duration),
}

/// Why the token cannot be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The config names the token.
    #[error("admin.token is set in the config: change it there")]
    Configured,
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminAuth {
    /// The token `configured`, or the one kept in `store`, or a new one. Returns the new token
    /// too when one was generated now: it must be shown to the operator, once.
    pub(crate) fn load(
        configured: Option<&str>,
        store: Arc<dyn Store>,
    ) -> Result<(Self, Option<String>), StoreError> {
        if let Some(token) = configured {
            return Ok((Self::new(digest(token), None), None));
        }
        let stored = store.get(Tree::Meta, DIGEST_KEY)?;
        if let Some(stored) = stored.and_then(|d| TokenDigest::try_from(d.as_slice()).ok()) {
            return Ok((Self::new(stored, Some(store)), None));
        }
        let token = rotate_stored(store.as_ref())?;
        Ok((Self::new(digest(&token), Some(store)), Some(token)))
    }

    fn new(digest: TokenDigest, store: Option<Arc<dyn Store>>) -> Self {
        Self {
            digest: ArcSwap::from_pointee(digest),
            store,
            failures: Gcra::new(FAILING_ADDRESSES),
            sessions: Sessions::new(session::LIFETIME),
        }
    }

    /// Checks the `Authorization` field of a call from `client`.
    pub(crate) fn check(
        &self,
        client: Option<IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let token = authorization.and_then(|value| value.strip_prefix(b"Bearer "));
        self.check_token(client, token)
    }

    /// Checks a token `client` gave (a login form, or a bearer field).
    pub(crate) fn check_token(
        &self,
        client: Option<IpAddr>,
        token: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        let address = client.map(|ip| ip.to_string()).unwrap_or_default();
        let now_ns = clock_ms().saturating_mul(1_000_000);
        let allowance = self.failures.peek("admin", &address, FAILURES, now_ns);
        if !allowance.allowed {
            return Err(Refusal::TooManyFailures(allowance.retry_after));
        }
        let given = token.map(|token| digest_bytes(token.trim_ascii()));
        let expected = self.digest.load();
        match given {
            Some(given) if bool::from(given.ct_eq(&**expected)) => Ok(()),
            // A wrong token is a guess; a missing one is not (a browser before its login).
            Some(_) => {
                self.failures.spend("admin", &address, FAILURES, now_ns);
                Err(Refusal::Unauthorized)
            }
            None => Err(Refusal::Unauthorized),
        }
    }

    /// Replaces the token; the old one stops working at once. Returns the new one.
    pub(crate) fn rotate(&self) -> Result<String, RotateError> {
        let store = self.store.as_ref().ok_or(RotateError::Configured)?;
        let token = rotate_stored(store.as_ref())?;
        self.digest.store(Arc::new(digest(&token)));
        self.sessions.end_all();
        Ok(token)
    }
}

/// Generates a token and keeps its digest in `store` (durably); returns the token.
pub(crate) fn rotate_stored(store: &dyn Store) -> Result<String, StoreError> {
    let token = generate();
    store.put(Tree::Meta, DIGEST_KEY, &digest(&token))?;
    store.flush()?;
    Ok(token)
}

/// `gh_` and 256 random bits from the OS, in hex.
fn generate() -> String {
    format!("gh_{}", random_hex())
}

/// 256 random bits from the OS, in hex: tokens nobody can guess.
pub(super) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn digest(token: &str) -> TokenDigest {
    digest_bytes(token.as_bytes())
}

pub(super) fn digest_bytes(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: &str) -> AdminAuth {
        AdminAuth::new(digest(token), None)
    }

    #[test]
    fn only_the_bearer_token_passes() {
        let auth = auth("right");
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        assert_eq!(auth.check(ip, Some(b"Bearer right")), Ok(()));
        assert_eq!(auth.check(ip, Some(b"Bearer  right ")), Ok(()));
        for wrong in [
            &b"Bearer wrong"[..],
            b"right",
            b"Basic right",
            b"Bearer ",
            b"",
        ] {
            assert_eq!(
                auth.check(ip, Some(wrong)),
                Err(Refusal::Unauthorized),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert_eq!(auth.check(ip, None), Err(Refusal::Unauthorized));
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_even_with_the_token() {
        let auth = auth("right");
        let guesser = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..20 {
            assert_eq!(auth.check(guesser, None), Err(Refusal::Unauthorized));
        }
        assert_eq!(
            auth.check(guesser, Some(b"Bearer right")),
            Ok(()),
            "missing is no guess"
        );
        for _ in 0..10 {
            assert_eq!(
                auth.check(guesser, Some(b"Bearer guess")),
                Err(Refusal::Unauthorized)
            );
        }
        assert!(matches!(
            auth.check(guesser, Some(b"Bearer right")),
            Err(Refusal::TooManyFailures(wait)) if wait > Duration::ZERO
        ));
        let other = Some(IpAddr::from([10, 0, 0, 3]));
        assert_eq!(auth.check(other, Some(b"Bearer right")), Ok(()));
    }

    #[test]
    fn generated_tokens_are_long_and_differ() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 67);
        assert!(a.starts_with("gh_"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_configured_token_cannot_be_rotated() {
        assert!(matches!(auth("x").rotate(), Err(RotateError::Configured)));
    }
}
