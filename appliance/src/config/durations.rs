//! Durations in config: `"250ms"`, `"5s"`, `"1h 30m"` (humantime), or a bare number of seconds, as
//! the reference deployments' `DB_POOL_TIMEOUT=60` style variables give them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

pub(super) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

/// Longest duration accepted: long enough for any timeout or interval, short enough that adding it
/// to a clock reading can never overflow.
const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let value = deserializer.deserialize_any(DurationVisitor)?;
    if value > MAX {
        return Err(serde::de::Error::custom(
            "a duration must be at most 365 days",
        ));
    }
    Ok(value)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"5s\", \"250ms\" or \"2m\", or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(secs))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        u64::try_from(secs)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs).map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        humantime::parse_duration(text)
            .map_err(|err| E::custom(format_args!("invalid duration {text:?}: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        d: Duration,
    }

    fn parse(toml: &str) -> Result<Duration, String> {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(toml))
            .extract::<Holder>()
            .map(|h| h.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_humantime_and_seconds() {
        assert_eq!(parse("d = \"250ms\""), Ok(Duration::from_millis(250)));
        assert_eq!(parse("d = \"1m 30s\""), Ok(Duration::from_secs(90)));
        assert_eq!(parse("d = 60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("d = \"60\""), Ok(Duration::from_secs(60)));
        assert_eq!(parse("d = 0.5"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn rejects_garbage_and_negatives() {
        assert!(
            parse("d = \"soon\"")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(parse("d = -3").unwrap_err().contains("negative"));
    }
}
