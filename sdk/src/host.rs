//! What gatehouse offers a plugin besides its input: the request's headers and cookies, and the
//! grantable capabilities (`log`, `now`, `kv`, `config`). A capability the plugin's config does
//! not grant makes gatehouse refuse the plugin at load, so call only what you will be granted.
//!
//! On wasm32 these are the component's imports; elsewhere they are served by
//! [`crate::testing::MockHost`].

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a `kv` write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The plugin's storage quota would be exceeded.
    QuotaExceeded,
    /// The store failed.
    Unavailable(String),
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{KvError, Level};
    use crate::wit;

    #[cfg(any(feature = "rate-limit", feature = "cache-rules"))]
    pub(crate) fn request_header(name: &str) -> Option<String> {
        wit::request_headers::get(name)
    }
    #[cfg(any(feature = "rate-limit", feature = "cache-rules"))]
    pub(crate) fn request_cookie(name: &str) -> Option<String> {
        wit::request_headers::cookie(name)
    }
    #[cfg(feature = "cache-rules")]
    pub(crate) fn response_header(name: &str) -> Option<String> {
        crate::cache::bindings::gatehouse::policy::response_headers::get(name)
    }
    pub(crate) fn log(level: Level, message: &str) {
        use wit::log::Level as L;
        let level = match level {
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        wit::log::log(level, message);
    }
    pub(crate) fn now() -> u64 {
        wit::clock::now()
    }
    pub(crate) fn kv_get(key: &str) -> Option<Vec<u8>> {
        wit::kv::get(key)
    }
    pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
        wit::kv::set(key, value).map_err(|err| match err {
            wit::kv::Error::QuotaExceeded => KvError::QuotaExceeded,
            wit::kv::Error::Unavailable(why) => KvError::Unavailable(why),
        })
    }
    pub(crate) fn kv_delete(key: &str) {
        wit::kv::delete(key)
    }
    pub(crate) fn config() -> String {
        wit::plugin_config::get()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{KvError, Level};
    use crate::testing::with_host;

    #[allow(dead_code, reason = "not every policy kind reads request headers")]
    pub(crate) fn request_header(name: &str) -> Option<String> {
        with_host(|h| h.find_header(name))
    }
    #[allow(dead_code, reason = "not every policy kind reads cookies")]
    pub(crate) fn request_cookie(name: &str) -> Option<String> {
        with_host(|h| h.cookies.get(name).cloned())
    }
    #[allow(dead_code, reason = "only cache rules read response headers")]
    pub(crate) fn response_header(name: &str) -> Option<String> {
        with_host(|h| h.find_response_header(name))
    }
    pub(crate) fn log(level: Level, message: &str) {
        with_host(|h| h.logs.push((level, message.to_string())))
    }
    pub(crate) fn now() -> u64 {
        with_host(|h| h.now_ns)
    }
    pub(crate) fn kv_get(key: &str) -> Option<Vec<u8>> {
        with_host(|h| h.kv.get(key).cloned())
    }
    pub(crate) fn kv_set(key: &str, value: &[u8]) -> Result<(), KvError> {
        with_host(|h| h.kv_set(key, value))
    }
    pub(crate) fn kv_delete(key: &str) {
        with_host(|h| {
            h.kv.remove(key);
        })
    }
    pub(crate) fn config() -> String {
        with_host(|h| h.config.clone())
    }
}

#[cfg(feature = "cache-rules")]
pub(crate) use imp::response_header;
#[cfg(any(feature = "rate-limit", feature = "cache-rules"))]
pub(crate) use imp::{request_cookie, request_header};

/// Writes to gatehouse's log, attributed to the plugin (grant `log`).
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Nanoseconds on a monotonic clock (grant `now`).
pub fn now() -> u64 {
    imp::now()
}

/// The plugin's own configuration string (grant `config`).
pub fn config() -> String {
    imp::config()
}

/// The plugin's configuration parsed as JSON (grant `config`). Keep it in a `OnceLock`: it is
/// the same for the life of an instance.
///
/// # Panics
/// When it does not parse. Panic at load, not per request: gatehouse calls every plugin once
/// before it goes live, so a bad config is refused then, with this message.
pub fn config_json<T: serde::de::DeserializeOwned>() -> T {
    parse_config(&config())
}

/// What [`config_json`] makes of `text`; an empty config reads as `{}`.
///
/// # Panics
/// When `text` is not valid JSON for `T`, with serde's message (field, line, column).
pub fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> T {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).unwrap_or_else(|err| panic!("invalid plugin config: {err}"))
}

/// The plugin's private key-value store, kept across restarts (grant `kv`).
pub mod kv {
    pub use super::KvError;

    /// The value under `key`.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        super::imp::kv_get(key)
    }

    /// Stores `value` under `key`, within the plugin's quota.
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        super::imp::kv_set(key, value)
    }

    /// Removes `key`.
    pub fn delete(key: &str) {
        super::imp::kv_delete(key)
    }
}
