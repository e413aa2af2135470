//! The shared tier: entries in Redis (one server or a Redis Cluster), so several gatehouses
//! behind one load balancer fill and answer from one cache, and purge it together.
//!
//! - An entry is stored as the persistent tier stores it (checksummed) under
//!   `PREFIXcache:e:KEY` and expires when it becomes useless; the sets `PREFIXcache:t:TAG` and
//!   `PREFIXcache:h:HOST` list the keys to purge by.
//! - A read waits at most `redis.timeout` and fails at once while Redis is unreachable: a slow
//!   or absent Redis is a miss, never an error. Writes run in the background.
//! - A purge deletes from Redis and is published on `PREFIXcache:purge`; every instance (this
//!   one too) drops the same entries from its local tiers.
//!
//! The client runs on a thread of its own, so nothing else on a gatehouse thread (a reload
//! compiling plugins, say) can delay Redis traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error, ErrorKind, EventInterface, KeysInterface, Options,
    PubsubInterface, ReconnectPolicy, SetsInterface,
};
use fred::types::scan::Scanner;
use fred::types::{Expiration, ExpireOptions};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use super::Tiers;
use super::entry::{Entry, now_ms};
use super::persist::{self, Corrupt};
use super::purge::Purge;
use crate::config::RedisConfig;

/// Longest a purge may take in Redis (a prefix purge scans every node).
const PURGE_DEADLINE: Duration = Duration::from_secs(30);

/// The shared tier's clients. Dropping it disconnects them and ends their thread.
pub(crate) struct SharedTier {
    client: Client,
    /// Whether purges from other instances reach this one (the subscription is up).
    subscribed: Arc<AtomicBool>,
    keys: KeySpace,
    /// For the request path: fail at once when disconnected, wait at most `redis.timeout`.
    fast: Options,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Names in Redis.
struct KeySpace {
    prefix: String,
}

impl KeySpace {
    fn entry(&self, key: &str) -> String {
        format!("{}cache:e:{key}", self.prefix)
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}cache:t:{tag}", self.prefix)
    }

    fn host(&self, host: &str) -> String {
        format!("{}cache:h:{}", self.prefix, host.to_ascii_lowercase())
    }

    fn channel(&self) -> String {
        format!("{}cache:purge", self.prefix)
    }
}

impl SharedTier {
    /// Connects (in the background, retrying for as long as it takes) to the Redis that
    /// `config` names; purges published by any instance are applied to `local`.
    pub(crate) fn start(config: &RedisConfig, local: Tiers) -> Result<Self, Error> {
        let mut builder = Builder::from_config(Config::from_url(&config.url)?);
        builder
            // Keep trying to connect at start instead of failing: gatehouse serves without Redis.
            .with_config(|c| c.fail_fast = false)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.max_command_attempts = 2;
            })
            .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(5))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
        let client = builder.build()?;
        let subscriber = builder.build_subscriber_client()?;
        let keys = KeySpace {
            prefix: config.key_prefix.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Error::new(ErrorKind::IO, err.to_string()))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (connecting, channel, url) = (client.clone(), keys.channel(), config.url.clone());
        let subscribed = Arc::new(AtomicBool::new(false));
        let listening = Arc::clone(&subscribed);
        std::thread::Builder::new()
            .name("gatehouse-redis".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _connection = connecting.connect();
                    let _subscription = subscriber.connect();
                    tokio::select! {
                        _ = stopped => {}
                        _ = apply_purges(&subscriber, &channel, &local, &listening) => {}
                    }
                    let _ = subscriber.quit().await;
                    let _ = connecting.quit().await;
                });
            })
            .map_err(|err| Error::new(ErrorKind::IO, err.to_string()))?;
        info!(url = %redacted(&url), "shared cache tier: connecting to Redis");
        Ok(Self {
            client,
            subscribed,
            keys,
            fast: Options {
                fail_fast: true,
                timeout: Some(config.timeout),
                max_attempts: Some(1),
                ..Options::default()
            },
            runtime: handle,
            _stop: stop,
        })
    }

    /// Whether Redis is reachable now and purges from other instances reach this one.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected() && self.subscribed.load(Ordering::Relaxed)
    }

    /// The entry under `key`; `None` when absent, or when Redis is slow or unreachable.
    pub(crate) async fn get(&self, key: &str) -> Option<Result<Entry, Corrupt>> {
        let redis_key = self.keys.entry(key);
        let value: Result<Option<Bytes>, Error> =
            self.client.with_options(&self.fast).get(&redis_key).await;
        match value {
            Ok(value) => {
                let decoded = persist::decode(&value?);
                if let Err(corrupt) = &decoded {
                    warn!(key, error = %corrupt, "dropping a corrupt shared cache entry");
                    let client = self.client.clone();
                    self.runtime.spawn(async move {
                        let _: Result<i64, Error> = client.del(redis_key).await;
                    });
                }
                Some(decoded)
            }
            Err(err) => {
                debug!(key, error = %err, "shared cache read failed; a miss");
                None
            }
        }
    }

    /// Stores `entry` under `key` in the background, with the index sets to purge it by.
    pub(crate) fn put(&self, key: &str, entry: Arc<Entry>) {
        let keep = entry.keep_until_ms().saturating_sub(now_ms());
        if keep == 0 {
            return;
        }
        let client = self.client.clone();
        let redis_key = self.keys.entry(key);
        let mut sets: Vec<String> = entry.fresh.tags.iter().map(|t| self.keys.tag(t)).collect();
        sets.push(self.keys.host(&entry.host));
        let member = key.to_string();
        self.runtime.spawn(async move {
            let value = Bytes::from(persist::encode(&entry));
            let expire = Some(Expiration::PX(keep as i64));
            let stored: Result<(), Error> =
                client.set(&redis_key, value, expire, None, false).await;
            if let Err(err) = stored {
                debug!(key = member, error = %err, "shared cache write failed");
                return;
            }
            for set in sets {
                // A set lives as long as its longest-lived member: set its expiry when it has
                // none, lengthen it when this member outlives it.
                let added: Result<i64, Error> = client.sadd(&set, member.as_str()).await;
                let _: Result<bool, Error> = client
                    .pexpire(&set, keep as i64, Some(ExpireOptions::NX))
                    .await;
                let _: Result<bool, Error> = client
                    .pexpire(&set, keep as i64, Some(ExpireOptions::GT))
                    .await;
                if added.is_err() {
                    break;
                }
            }
        });
    }

    /// Deletes what `purge` names from Redis and tells every instance to drop it from its
    /// local tiers. Returns the keys deleted from Redis.
    pub(crate) async fn purge(&self, purge: &Purge) -> Result<Vec<String>, Error> {
        // Commands would wait for a reconnection; an operator wants to hear now.
        if !self.client.is_connected() {
            return Err(Error::new(ErrorKind::Canceled, "Redis is unreachable"));
        }
        tokio::time::timeout(PURGE_DEADLINE, self.purge_connected(purge))
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "the purge took too long")))
    }

    async fn purge_connected(&self, purge: &Purge) -> Result<Vec<String>, Error> {
        let (keys, set) = match purge {
            Purge::Key(key) => (vec![key.clone()], None),
            Purge::Prefix(prefix) => (self.scan(prefix).await?, None),
            Purge::Tag(tag) => self.members(self.keys.tag(tag)).await?,
            Purge::Host(host) => self.members(self.keys.host(host)).await?,
        };
        let mut gone = Vec::new();
        // One key at a time: in a cluster the keys live in different slots.
        for key in keys {
            let deleted: i64 = self.client.del(self.keys.entry(&key)).await?;
            if deleted > 0 {
                gone.push(key);
            }
        }
        if let Some(set) = set {
            let _: i64 = self.client.del(set).await?;
        }
        let message = serde_json::to_string(purge).expect("a purge serialises");
        let _: i64 = self.client.publish(self.keys.channel(), message).await?;
        Ok(gone)
    }

    async fn members(&self, set: String) -> Result<(Vec<String>, Option<String>), Error> {
        let members: Vec<String> = self.client.smembers(&set).await?;
        Ok((members, Some(set)))
    }

    /// Cache keys starting with `prefix`, from every node.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let stored_prefix = self.keys.entry("");
        let pattern = format!("{}*", glob_escape(&self.keys.entry(prefix)));
        let mut pages = if self.client.is_clustered() {
            self.client.scan_cluster(pattern, Some(500), None).boxed()
        } else {
            self.client.scan(pattern, Some(500), None).boxed()
        };
        let mut keys = Vec::new();
        while let Some(mut page) = pages.try_next().await? {
            for key in page.take_results().unwrap_or_default() {
                if let Some(key) = key.as_str().and_then(|k| k.strip_prefix(&stored_prefix)) {
                    keys.push(key.to_string());
                }
            }
            page.next();
        }
        Ok(keys)
    }
}

/// Applies the purges published on `channel` to `local`, subscribing again after a reconnect;
/// `subscribed` says whether the subscription is up.
async fn apply_purges(
    subscriber: &SubscriberClient,
    channel: &str,
    local: &Tiers,
    subscribed: &AtomicBool,
) {
    let mut messages = subscriber.message_rx();
    let _resubscribing = subscriber.manage_subscriptions();
    loop {
        if subscriber.wait_for_connect().await.is_ok()
            && subscriber.subscribe(channel).await.is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    subscribed.store(true, Ordering::Relaxed);
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    loop {
        // Purges, and the connection state as the subscriber's events tell it.
        let up = tokio::select! {
            event = reconnects.recv() => event.map(|_| true),
            event = errors.recv() => event.map(|_| subscriber.is_connected()),
            message = messages.recv() => match apply(message, channel, local) {
                true => continue,
                false => return,
            },
        };
        match up {
            Ok(up) => subscribed.store(up, Ordering::Relaxed),
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
/// Applies one purge `message` from `channel` to `local`. Returns false once the channel closed.
fn apply(message: Result<fred::types::Message, RecvError>, channel: &str, local: &Tiers) -> bool {
    let message = match message {
        Ok(message) => message,
        Err(RecvError::Lagged(missed)) => {
            warn!(missed, "shared cache: purge messages were missed");
            return true;
        }
        Err(RecvError::Closed) => return false,
    };
    let purge = message
        .value
        .as_str()
        .and_then(|text| serde_json::from_str::<Purge>(&text).ok());
    match purge {
        Some(purge) => {
            local.purge_local(&purge);
        }
        None => warn!(channel, "shared cache: ignoring a malformed purge message"),
    }
    true
}

/// `text` with Redis glob characters escaped.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `url` without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_escaped_and_passwords_hidden() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(
            redacted("redis://user:secret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redacted("redis://db:6379"), "redis://db:6379");
    }
}
