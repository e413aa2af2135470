//! Business metrics: named values the app posts to the admin API (orders, sign-ups, revenue),
//! shown on `/metrics` as `gatehouse_business_NAME` gauges and therefore kept as trends like
//! every other metric. Names and label sets are bounded, since clients choose them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Deserialize;

/// Names at most.
const MAX_NAMES: usize = 100;
/// Label sets at most, over all names.
const MAX_SERIES: usize = 1000;
/// Labels per value at most.
const MAX_LABELS: usize = 8;
/// Longest label value.
const MAX_LABEL_VALUE: usize = 128;

/// One posted value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posted {
    /// `[a-z_][a-z0-9_]*`, at most 64 characters (`metric_name` and `metric` are accepted too,
    /// as the reference deployment's scripts send them).
    #[serde(alias = "metric_name", alias = "metric")]
    pub name: String,
    /// The value, or the amount to add.
    pub value: f64,
    /// Labels, named like the name (`tags` is accepted too).
    #[serde(default, alias = "tags")]
    pub labels: BTreeMap<String, String>,
    /// Add `value` to the current one (a counter) instead of setting it (a gauge).
    #[serde(default)]
    pub add: bool,
}

/// Why a value was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A name or label name outside `[a-z_][a-z0-9_]*`.
    #[error(
        "{0:?} is not a metric or label name: use a-z, 0-9 and _, not starting with a digit, at most 64 characters"
    )]
    BadName(String),
    /// A label value too long.
    #[error("label {0:?}: values are at most {MAX_LABEL_VALUE} characters")]
    LongValue(String),
    /// Too many labels.
    #[error("at most {MAX_LABELS} labels per value")]
    TooManyLabels,
    /// NaN or infinite.
    #[error("the value must be a finite number")]
    NotFinite,
    /// The bound on names or series is reached.
    #[error(
        "at most {MAX_NAMES} names and {MAX_SERIES} label sets are kept; this would be one more"
    )]
    Full,
}

type Series = BTreeMap<Vec<(String, String)>, f64>;

/// The values posted so far, by name and label set.
#[derive(Default)]
pub struct BusinessMetrics {
    values: Mutex<BTreeMap<String, Series>>,
}

impl BusinessMetrics {
    /// Sets (or adds to) a value; returns the value now held.
    pub fn post(&self, posted: Posted) -> Result<f64, Refused> {
        check_name(&posted.name)?;
        if !posted.value.is_finite() {
            return Err(Refused::NotFinite);
        }
        if posted.labels.len() > MAX_LABELS {
            return Err(Refused::TooManyLabels);
        }
        for (name, value) in &posted.labels {
            check_name(name)?;
            if value.chars().count() > MAX_LABEL_VALUE {
                return Err(Refused::LongValue(name.clone()));
            }
        }
        let labels: Vec<(String, String)> = posted.labels.into_iter().collect();
        let mut values = self.values.lock().expect("business metrics lock");
        let known = values
            .get(&posted.name)
            .is_some_and(|series| series.contains_key(&labels));
        let series_count: usize = values.values().map(BTreeMap::len).sum();
        let new_name = !values.contains_key(&posted.name);
        if !known && (series_count >= MAX_SERIES || (new_name && values.len() >= MAX_NAMES)) {
            return Err(Refused::Full);
        }
        let value = values
            .entry(posted.name)
            .or_default()
            .entry(labels)
            .or_insert(0.0);
        if posted.add {
            *value += posted.value;
        } else {
            *value = posted.value;
        }
        Ok(*value)
    }

    /// A collector that shows them in a registry.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(Shown(Arc::clone(self)))
    }
}

fn check_name(name: &str) -> Result<(), Refused> {
    let mut chars = name.chars();
    let valid = name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Refused::BadName(name.to_string()))
    }
}

struct Shown(Arc<BusinessMetrics>);

impl fmt::Debug for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusinessMetrics")
    }
}

impl Collector for Shown {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let values = self.0.values.lock().expect("business metrics lock");
        for (name, series) in values.iter() {
            let name = format!("business_{name}");
            let mut family = encoder.encode_descriptor(
                &name,
                "A business metric posted to the admin API",
                None,
                MetricType::Gauge,
            )?;
            for (labels, value) in series {
                ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(name: &str, value: f64, add: bool) -> Posted {
        Posted {
            name: name.into(),
            value,
            labels: BTreeMap::from([("plan".into(), "pro".into())]),
            add,
        }
    }

    #[test]
    fn values_are_set_or_added() {
        let metrics = BusinessMetrics::default();
        assert_eq!(metrics.post(posted("orders", 2.0, true)).unwrap(), 2.0);
        assert_eq!(metrics.post(posted("orders", 3.0, true)).unwrap(), 5.0);
        assert_eq!(metrics.post(posted("orders", 1.0, false)).unwrap(), 1.0);
    }

    #[test]
    fn bad_names_values_and_too_many_series_are_refused() {
        let metrics = BusinessMetrics::default();
        for bad in ["Orders", "9lives", "a-b", ""] {
            assert!(matches!(
                metrics.post(posted(bad, 1.0, false)),
                Err(Refused::BadName(_))
            ));
        }
        assert!(matches!(
            metrics.post(posted("x", f64::NAN, false)),
            Err(Refused::NotFinite)
        ));
        for i in 0..MAX_SERIES {
            let mut one = posted("signups", 1.0, false);
            one.labels.insert("n".into(), i.to_string());
            metrics.post(one).unwrap();
        }
        assert!(matches!(
            metrics.post(posted("revenue", 1.0, false)),
            Err(Refused::Full)
        ));
        let mut known = posted("signups", 2.0, false);
        known.labels.insert("n".into(), "0".into());
        assert_eq!(
            metrics.post(known).unwrap(),
            2.0,
            "known series still take values"
        );
    }
}
