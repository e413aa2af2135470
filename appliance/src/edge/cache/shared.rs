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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::{
    ClientLike, Error, ErrorKind, EventInterface, KeysInterface, PubsubInterface, SetsInterface,
};
use fred::types::scan::Scanner;
use fred::types::{Expiration, ExpireOptions};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use super::Tiers;
use super::entry::{Entry, now_ms};
use super::persist::{self, Corrupt};
use super::purge::Purge;
use crate::redis::RedisLink;

/// Longest a purge may take in Redis (a prefix purge scans every node).
const PURGE_DEADLINE: Duration = Duration::from_secs(30);

/// The shared tier. Dropping it ends its subscription.
pub(crate) struct SharedTier {
    link: Arc<RedisLink>,
    /// Whether purges from other instances reach this one (the subscription is up).
    subscribed: Arc<AtomicBool>,
    keys: KeySpace,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Names in Redis.
struct KeySpace {
    entry: String,
    tag: String,
    host: String,
    channel: String,
}

impl KeySpace {
    fn new(link: &RedisLink) -> Self {
        Self {
            entry: link.key("cache:e:"),
            tag: link.key("cache:t:"),
            host: link.key("cache:h:"),
            channel: link.key("cache:purge"),
        }
    }

    fn entry(&self, key: &str) -> String {
        format!("{}{key}", self.entry)
    }

    fn tag(&self, tag: &str) -> String {
        format!("{}{tag}", self.tag)
    }

    fn host(&self, host: &str) -> String {
        format!("{}{}", self.host, host.to_ascii_lowercase())
    }
}

impl SharedTier {
    /// The tier in the Redis behind `link`; purges published by any instance are applied to
    /// `local`.
    pub(crate) fn start(link: Arc<RedisLink>, local: Tiers) -> Result<Self, Error> {
        let subscriber = link.subscriber()?;
        let keys = KeySpace::new(&link);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let channel = keys.channel.clone();
        let subscribed = Arc::new(AtomicBool::new(false));
        let listening = Arc::clone(&subscribed);
        link.spawn(async move {
            let _subscription = subscriber.connect();
            tokio::select! {
                _ = stopped => {}
                _ = apply_purges(&subscriber, &channel, &local, &listening) => {}
            }
            let _ = subscriber.quit().await;
        });
        Ok(Self {
            link,
            subscribed,
            keys,
            _stop: stop,
        })
    }

    /// Whether Redis is reachable now and purges from other instances reach this one.
    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_connected() && self.subscribed.load(Ordering::Relaxed)
    }

    /// The entry under `key`; `None` when absent, or when Redis is slow or unreachable.
    pub(crate) async fn get(&self, key: &str) -> Option<Result<Entry, Corrupt>> {
        let redis_key = self.keys.entry(key);
        let value: Result<Option<Bytes>, Error> = self
            .link
            .client()
            .with_options(self.link.fast())
            .get(&redis_key)
            .await;
        match value {
            Ok(value) => {
                let decoded = persist::decode(&value?);
                if let Err(corrupt) = &decoded {
                    warn!(key, error = %corrupt, "dropping a corrupt shared cache entry");
                    let client = self.link.client().clone();
                    self.link.spawn(async move {
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
        let client = self.link.client().clone();
        let redis_key = self.keys.entry(key);
        let mut sets: Vec<String> = entry.fresh.tags.iter().map(|t| self.keys.tag(t)).collect();
        sets.push(self.keys.host(&entry.host));
        let member = key.to_string();
        self.link.spawn(async move {
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
        if !self.link.client().is_connected() {
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
            let deleted: i64 = self.link.client().del(self.keys.entry(&key)).await?;
            if deleted > 0 {
                gone.push(key);
            }
        }
        if let Some(set) = set {
            let _: i64 = self.link.client().del(set).await?;
        }
        let message = serde_json::to_string(purge).expect("a purge serialises");
        let _: i64 = self
            .link
            .client()
            .publish(&self.keys.channel, message)
            .await?;
        Ok(gone)
    }

    async fn members(&self, set: String) -> Result<(Vec<String>, Option<String>), Error> {
        let members: Vec<String> = self.link.client().smembers(&set).await?;
        Ok((members, Some(set)))
    }

    /// Cache keys starting with `prefix`, from every node.
    async fn scan(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let stored_prefix = &self.keys.entry;
        let pattern = format!("{}*", glob_escape(&self.keys.entry(prefix)));
        let mut pages = if self.link.client().is_clustered() {
            self.link
                .client()
                .scan_cluster(pattern, Some(500), None)
                .boxed()
        } else {
            self.link.client().scan(pattern, Some(500), None).boxed()
        };
        let mut keys = Vec::new();
        while let Some(mut page) = pages.try_next().await? {
            for key in page.take_results().unwrap_or_default() {
                if let Some(key) = key
                    .as_str()
                    .and_then(|k| k.strip_prefix(stored_prefix.as_str()))
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
