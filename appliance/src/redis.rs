//! The connection to Redis (one server or a Redis Cluster) that the shared cache tier and the
//! shared rate limits use, so several gatehouses behind one load balancer share one state.
//!
//! The clients run on a thread of their own, so nothing else on a gatehouse thread (a reload
//! compiling plugins, say) can delay Redis traffic. Commands on the request path fail at once
//! while Redis is unreachable and otherwise wait at most `redis.timeout`: a slow or absent Redis
//! degrades gatehouse, it never stalls it.

use std::future::Future;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::ReconnectPolicy;
use fred::prelude::{Builder, Client, ClientLike, Config, Error, Options};
use tracing::info;

use crate::config::RedisConfig;

/// The link to Redis. Dropping it disconnects and ends its thread.
pub(crate) struct RedisLink {
    client: Client,
    /// For more clients of the same Redis (subscribers).
    builder: Builder,
    /// For the request path: fail at once when disconnected, wait at most `redis.timeout`.
    fast: Options,
    prefix: String,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RedisLink {
    /// Connects (in the background, retrying for as long as it takes) to the Redis that
    /// `config` names.
    pub(crate) fn start(config: &RedisConfig) -> Result<Self, Error> {
        let mut builder = Builder::from_config(Config::from_url(&config.url)?);
        builder
            // Keep trying to connect at start instead of failing: gatehouse serves without Redis.
            .with_config(|c| c.fail_fast = false)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.max_command_attempts = 2;
            })
            .with_performance_config(|c| c.default_command_timeout = Duration::from_secs(5))
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let connecting = client.clone();
        std::thread::Builder::new()
            .name("gatehouse-redis".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _connection = connecting.connect();
                    let _ = stopped.await;
                    let _ = connecting.quit().await;
                });
            })?;
        info!(url = %redacted(&config.url), "connecting to Redis");
        Ok(Self {
            client,
            builder,
            fast: Options {
                fail_fast: true,
                timeout: Some(config.timeout),
                // A cluster node reconnecting or moving a slot takes another write; the timeout
                // bounds them all.
                max_attempts: Some(3),
                ..Options::default()
            },
            prefix: config.key_prefix.clone(),
            runtime: handle,
            _stop: stop,
        })
    }

    /// The client, for background work that may wait for a reconnection.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Options for commands on the request path.
    pub(crate) fn fast(&self) -> &Options {
        &self.fast
    }

    /// `name` under this deployment's key prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A subscriber of the same Redis; connect it with [`RedisLink::spawn`].
    pub(crate) fn subscriber(&self) -> Result<SubscriberClient, Error> {
        self.builder.build_subscriber_client()
    }

    /// Runs `work` on the link's thread.
    pub(crate) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(work);
    }

    /// Whether Redis is reachable now.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
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
    fn passwords_are_hidden() {
        assert_eq!(
            redacted("redis://user:secret@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redacted("redis://db:6379"), "redis://db:6379");
    }
}
