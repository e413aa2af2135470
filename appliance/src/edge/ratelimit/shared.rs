//! Rate limits shared by every instance through Redis: each decision is one atomic script on
//! one key (so any key slot of a Redis Cluster will do), timed by Redis's clock (so instances
//! whose clocks disagree still share one quota).
//!
//! The key is `PREFIXrl:` and a 128-bit hash of the policy and the plugin's key: plugin keys
//! come from clients, and a hash bounds their length and keeps them from choosing a slot.

use std::sync::Arc;

use fred::prelude::{ClientLike, Error};
use fred::types::{ClusterHash, CustomCommand, Value};

use super::gcra::{Quota, Verdict};
use crate::redis::RedisLink;

/// One GCRA decision on `KEYS[1]`, which holds the theoretical arrival time in microseconds of
/// Redis's clock. `ARGV`: interval, depth and cost in microseconds. Returns allowed (0 or 1), the
/// TAT's lead over now after the decision and, when refused, the wait (µs, rounded up).
/// Lua numbers are doubles: microseconds since 1970 are exact in them until the year 2255.
const GCRA_LUA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval, depth, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local after = tat + cost
if after - now > depth then
  return {0, math.ceil(tat - now), math.ceil(after - depth - now)}
end
if after > now then
  redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil((after - now) / 1000))
end
return {1, math.ceil(after - now), 0}
";

/// Depth, interval and cost beyond this are clamped: about 142 years, still exact as doubles.
const MAX_MICROS: u128 = 1 << 52;

/// Counting in Redis.
pub(crate) struct SharedLimits {
    link: Arc<RedisLink>,
    /// The script's SHA-1, by which Redis knows it once loaded.
    sha1: String,
    prefix: String,
}

impl SharedLimits {
    pub(crate) fn new(link: Arc<RedisLink>) -> Self {
        Self {
            prefix: link.key("rl:"),
            link,
            sha1: fred::util::sha1_hash(GCRA_LUA),
        }
    }

    /// Whether Redis is reachable now.
    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Spends `quota.cost` units of `key` (within `scope`, the policy) in Redis. Fails at once
    /// while Redis is unreachable, and after `redis.timeout` when it is slow.
    pub(crate) async fn spend(
        &self,
        scope: &str,
        key: &str,
        quota: Quota,
    ) -> Result<Verdict, Error> {
        let Some(cell) = quota.cell() else {
            return Ok(quota.nothing_allowed());
        };
        let micros = |ns: u128| {
            let us = ns.min(MAX_MICROS * 1000) as f64 / 1000.0;
            Value::from(format!("{us:.3}"))
        };
        // SCRIPT (filled in below), 1 key, the key, then ARGV.
        let mut args = vec![
            Value::Null,
            Value::from(1),
            Value::from(self.redis_key(scope, key)),
            micros(cell.interval),
            micros(cell.depth),
            micros(cell.cost),
        ];
        // `custom` rather than the scripting interface: only it takes the request-path options.
        let client = self.link.client().with_options(self.link.fast());
        let run =
            |name: &'static str| CustomCommand::new_static(name, ClusterHash::Offset(2), false);
        args[0] = Value::from(self.sha1.as_str());
        let reply: Result<(u8, u64, u64), Error> =
            client.custom(run("EVALSHA"), args.clone()).await;
        let (allowed, reset, retry) = match reply {
            // EVAL answers and leaves the script cached on that node for the next EVALSHA.
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                args[0] = Value::from(GCRA_LUA);
                client.custom(run("EVAL"), args).await?
            }
            reply => reply?,
        };
        let ns = |us: u64| u128::from(us) * 1000;
        Ok(cell.verdict(allowed == 1, ns(reset), ns(retry)))
    }

    fn redis_key(&self, scope: &str, key: &str) -> String {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&(scope.len() as u64).to_le_bytes());
        hasher.update(scope.as_bytes());
        hasher.update(key.as_bytes());
        format!("{}{:032x}", self.prefix, hasher.digest128())
    }
}
