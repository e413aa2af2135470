//! Web UI sessions. A browser logs in once with the admin token and then carries a session
//! cookie (HttpOnly, Secure, SameSite=Strict) instead of the token, so page scripts never hold
//! it. Calls that change something must also carry the session's CSRF token in a header, which
//! a page on another site cannot read or send.
//!
//! Sessions live in memory only: a restart or a token rotation logs every browser out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::token::{TokenDigest, digest_bytes, random_hex};

/// The cookie's name.
pub(crate) const COOKIE: &str = "gatehouse_session";

/// The header that carries the CSRF token on calls that change something.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// How long a session lasts after its login, however active.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; a new login past this ends the oldest.
const MAX_SESSIONS: usize = 256;

/// The logged-in browsers.
pub(crate) struct Sessions {
    lifetime: Duration,
    /// By the digest of the cookie value, so a lookup compares digests, not secrets.
    by_digest: Mutex<HashMap<TokenDigest, Session>>,
}

/// What a request knows about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// Sent back with every call that changes something.
    pub(crate) csrf: String,
    expires: Instant,
}

/// A new session: the cookie value to set and its CSRF token.
#[derive(Debug)]
pub(crate) struct Login {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// Why a cookie does not pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    /// No such session (never, logged out, expired, or ended by a rotation).
    Unknown,
    /// A call that changes something without the session's CSRF token.
    MissingCsrf,
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session (the caller has checked the admin token).
    pub(crate) fn start(&self, now: Instant) -> Login {
        let login = Login {
            cookie: random_hex(),
            csrf: random_hex(),
        };
        let mut sessions = self.lock();
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(digest, _)| *digest)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            digest_bytes(login.cookie.as_bytes()),
            Session {
                csrf: login.csrf.clone(),
                expires: now + self.lifetime,
            },
        );
        login
    }

    /// The session of `cookie`. A call that `changes` something must carry its CSRF token.
    pub(crate) fn check(
        &self,
        cookie: &str,
        changes: bool,
        csrf: Option<&[u8]>,
        now: Instant,
    ) -> Result<Session, SessionRefusal> {
        let digest = digest_bytes(cookie.as_bytes());
        let mut sessions = self.lock();
        let session = match sessions.get(&digest) {
            Some(session) if session.expires > now => session.clone(),
            Some(_) => {
                sessions.remove(&digest);
                return Err(SessionRefusal::Unknown);
            }
            None => return Err(SessionRefusal::Unknown),
        };
        drop(sessions);
        let csrf_matches = csrf.is_some_and(|given| {
            subtle::ConstantTimeEq::ct_eq(given, session.csrf.as_bytes()).into()
        });
        if changes && !csrf_matches {
            return Err(SessionRefusal::MissingCsrf);
        }
        Ok(session)
    }

    /// Ends the session of `cookie`.
    pub(crate) fn end(&self, cookie: &str) {
        self.lock().remove(&digest_bytes(cookie.as_bytes()));
    }

    /// Ends every session (the admin token changed).
    pub(crate) fn end_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Session>> {
        self.by_digest.lock().expect("sessions lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reads_freely_and_changes_only_with_its_csrf_token() {
        let sessions = Sessions::new(LIFETIME);
        let now = Instant::now();
        let login = sessions.start(now);
        assert_ne!(login.cookie, login.csrf);
        assert!(sessions.check(&login.cookie, false, None, now).is_ok());
        assert_eq!(
            sessions.check(&login.cookie, true, None, now),
            Err(SessionRefusal::MissingCsrf)
        );
        assert_eq!(
            sessions.check(&login.cookie, true, Some(b"forged"), now),
            Err(SessionRefusal::MissingCsrf)
        );
        assert!(
            sessions
                .check(&login.cookie, true, Some(login.csrf.as_bytes()), now)
                .is_ok()
        );
        assert_eq!(
            sessions.check("made-up", false, None, now),
            Err(SessionRefusal::Unknown)
        );
    }

    #[test]
    fn sessions_end_by_logout_rotation_and_age() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let (a, b, c) = (
            sessions.start(now),
            sessions.start(now),
            sessions.start(now),
        );
        sessions.end(&a.cookie);
        assert_eq!(
            sessions.check(&a.cookie, false, None, now),
            Err(SessionRefusal::Unknown)
        );
        assert!(sessions.check(&b.cookie, false, None, now).is_ok());
        let later = now + Duration::from_secs(61);
        assert_eq!(
            sessions.check(&b.cookie, false, None, later),
            Err(SessionRefusal::Unknown)
        );
        sessions.end_all();
        assert_eq!(
            sessions.check(&c.cookie, false, None, now),
            Err(SessionRefusal::Unknown)
        );
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let sessions = Sessions::new(LIFETIME);
        let start = Instant::now();
        let first = sessions.start(start);
        for i in 1..=MAX_SESSIONS {
            sessions.start(start + Duration::from_millis(i as u64));
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
        assert_eq!(
            sessions.check(&first.cookie, false, None, start),
            Err(SessionRefusal::Unknown)
        );
    }
}
