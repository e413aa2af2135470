//! The off-host test harness: the host a plugin talks to under `cargo test`.
//!
//! ```ignore
//! let mut host = MockHost::new().header("x-api-key", "team-a").config(r#"{"limit": 10}"#);
//! let decision = host.run(|| MyPolicy::decide(&request));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::{KvError, Level};

/// A fake gatehouse: the request's headers and cookies, the response's headers, a clock you set,
/// an in-memory `kv` with a quota, the plugin's config string, and what the plugin logged.
#[derive(Debug, Clone)]
pub struct MockHost {
    /// Request headers (names in any case).
    pub headers: Vec<(String, String)>,
    /// Request cookies.
    pub cookies: BTreeMap<String, String>,
    /// Response headers, for cache rules deciding on a response.
    pub response_headers: Vec<(String, String)>,
    /// What `now()` returns, in nanoseconds.
    pub now_ns: u64,
    /// The plugin's `kv` contents.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// Bytes of keys and values the `kv` may hold (gatehouse's default: 1 MiB).
    pub kv_quota_bytes: usize,
    /// What `config()` returns.
    pub config: String,
    /// What the plugin logged.
    pub logs: Vec<(Level, String)>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            cookies: BTreeMap::new(),
            response_headers: Vec::new(),
            now_ns: 0,
            kv: BTreeMap::new(),
            kv_quota_bytes: 1 << 20,
            config: String::new(),
            logs: Vec::new(),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<MockHost>> = const { RefCell::new(None) };
}

impl MockHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a request header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a request cookie.
    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        self.cookies.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a response header.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the plugin's config string.
    pub fn config(mut self, config: &str) -> Self {
        self.config = config.to_string();
        self
    }

    /// Sets the clock.
    pub fn now(mut self, now_ns: u64) -> Self {
        self.now_ns = now_ns;
        self
    }

    /// Runs `call` (a policy function) with this host answering its host calls.
    pub fn run<R>(&mut self, call: impl FnOnce() -> R) -> R {
        CURRENT.with_borrow_mut(|current| *current = Some(std::mem::take(self)));
        let result = call();
        *self = CURRENT
            .with_borrow_mut(|current| current.take())
            .expect("host installed above");
        result
    }

    pub(crate) fn find_header(&self, name: &str) -> Option<String> {
        find(&self.headers, name)
    }

    pub(crate) fn find_response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers, name)
    }

    pub(crate) fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let used: usize = self
            .kv
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if used + key.len() + value.len() > self.kv_quota_bytes {
            return Err(KvError::QuotaExceeded);
        }
        self.kv.insert(key.to_string(), value.to_vec());
        Ok(())
    }
}

fn find(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Runs `f` against the host installed by [`MockHost::run`].
pub(crate) fn with_host<R>(f: impl FnOnce(&mut MockHost) -> R) -> R {
    CURRENT.with_borrow_mut(|current| {
        let host = current
            .as_mut()
            .expect("gatehouse host calls are only available inside MockHost::run");
        f(host)
    })
}
