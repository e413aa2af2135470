//! Trends: every metric kept as time series in the state store. Each tier of `[trends]` holds
//! one frame (every series' value) per step, dropped once older than the tier keeps, so disk
//! use is bounded by tiers × frames × series. Histogram buckets are left out (their `_count` and
//! `_sum` are kept); counters are stored as they are and turned into rates when queried.
//!
//! Layout of the `trends` tree: `n` + series → its id (u32), and `f` + tier + unix seconds → a
//! frame: `(id, value)` pairs, postcard-encoded and zstd-compressed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::{error, warn};

use super::exposition::{sample, samples};
use crate::config::{TrendTier, TrendsConfig};
use crate::store::{Store, Tree};

/// Most points a query answers with per series; longer ranges are read from coarser tiers.
const MAX_POINTS: u64 = 4000;
/// zstd level for frames: fast, and most of the gain.
const FRAME_LEVEL: i32 = 3;

/// What to read.
#[derive(Debug, Clone)]
pub struct TrendQuery {
    /// The sample name, as `/metrics` shows it (`gatehouse_http_requests_total`).
    pub metric: String,
    /// Labels the series must have, with these values.
    pub labels: Vec<(String, String)>,
    /// Unix seconds, inclusive.
    pub from: u64,
    /// Unix seconds, inclusive.
    pub to: u64,
    /// Seconds between the points answered, when coarser than the tier read: each step
    /// answers with the last value in it.
    pub step: Option<u64>,
    /// Per-second increase between points instead of values (for counters).
    pub rate: bool,
}

/// The points of every matching series.
#[derive(Debug, Serialize)]
pub struct TrendAnswer {
    /// The sample name.
    pub metric: String,
    /// Seconds between points (the tier read).
    pub step_seconds: u64,
    /// One per label set.
    pub series: Vec<TrendSeries>,
}

/// One series' points.
#[derive(Debug, Serialize)]
pub struct TrendSeries {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `[unix seconds, value]`, oldest first.
    pub points: Vec<(u64, f64)>,
}

/// The series names given ids so far.
#[derive(Default)]
struct SeriesIndex {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

/// Records frames and answers queries.
pub struct Trends {
    store: Arc<dyn Store>,
    tiers: Vec<TrendTier>,
    max_series: usize,
    index: Mutex<SeriesIndex>,
    /// Per tier, the step (unix seconds / step) of the last frame written.
    written: Mutex<Vec<Option<u64>>>,
    /// Whether the series bound was reported already.
    full_reported: AtomicBool,
}

impl Trends {
    /// Trends as `config` says, kept in `store` (series named by earlier runs keep their ids).
    pub fn new(store: Arc<dyn Store>, config: &TrendsConfig) -> Self {
        let mut index = SeriesIndex::default();
        match store.scan_prefix(Tree::Trends, b"n") {
            Ok(entries) => {
                let mut named: Vec<(u32, String)> = entries
                    .into_iter()
                    .filter_map(|(key, value)| {
                        let id = u32::from_be_bytes(value.as_slice().try_into().ok()?);
                        Some((id, String::from_utf8(key[1..].to_vec()).ok()?))
                    })
                    .collect();
                named.sort();
                for (id, name) in named {
                    // Ids are dense from 0; a gap (a damaged entry) ends the reuse.
                    if id as usize != index.names.len() {
                        break;
                    }
                    index.ids.insert(name.clone(), id);
                    index.names.push(name);
                }
            }
            Err(err) => error!(error = %err, "cannot read the trend series; starting afresh"),
        }
        Self {
            store,
            tiers: config.tiers.clone(),
            max_series: config.max_series,
            index: Mutex::new(index),
            written: Mutex::new(vec![None; config.tiers.len()]),
            full_reported: AtomicBool::new(false),
        }
    }

    /// The finest step: how often [`Trends::record`] should be called.
    pub fn interval(&self) -> std::time::Duration {
        self.tiers[0].step
    }

    /// Records `text` (a rendering of every metric) as of `at`, in each tier due a frame; drops
    /// frames past their tier's keep once per step of the second tier.
    pub fn record(&self, text: &str, at: SystemTime) {
        let secs = unix_seconds(at);
        let due: Vec<(usize, u64)> = {
            let mut written = self.written.lock().expect("trends lock");
            self.tiers
                .iter()
                .enumerate()
                .filter_map(|(tier, config)| {
                    let slot = secs / config.step.as_secs();
                    (written[tier] != Some(slot)).then(|| {
                        written[tier] = Some(slot);
                        (tier, slot * config.step.as_secs())
                    })
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let frame = encode(&self.frame(text));
        for &(tier, start) in &due {
            if let Err(err) = self
                .store
                .put(Tree::Trends, &frame_key(tier, start), &frame)
            {
                error!(error = %err, "cannot record a trend frame");
            }
        }
        // Pruning follows the coarser tiers' pace (every minute by default), not every second.
        if due.iter().any(|&(tier, _)| tier == 1) || self.tiers.len() == 1 {
            self.prune(secs);
        }
    }

    /// The value of every series in `text`, by id; new series get ids while the bound allows.
    fn frame(&self, text: &str) -> Vec<(u32, f64)> {
        let mut index = self.index.lock().expect("trends lock");
        let mut frame = Vec::new();
        for sample in samples(text) {
            if sample.name.ends_with("_bucket") || sample.name.ends_with("_created") {
                continue;
            }
            if !sample.value.is_finite() {
                continue;
            }
            let id = match index.ids.get(sample.series) {
                Some(id) => *id,
                None => match self.name_series(&mut index, sample.series) {
                    Some(id) => id,
                    None => continue,
                },
            };
            frame.push((id, sample.value));
        }
        frame
    }

    fn name_series(&self, index: &mut SeriesIndex, series: &str) -> Option<u32> {
        if index.names.len() >= self.max_series {
            if !self.full_reported.swap(true, Ordering::Relaxed) {
                warn!(
                    max_series = self.max_series,
                    series, "trends.max_series reached: new series are not recorded"
                );
            }
            return None;
        }
        let id = index.names.len() as u32;
        let mut key = b"n".to_vec();
        key.extend_from_slice(series.as_bytes());
        if let Err(err) = self.store.put(Tree::Trends, &key, &id.to_be_bytes()) {
            error!(error = %err, "cannot name a trend series");
            return None;
        }
        index.ids.insert(series.to_string(), id);
        index.names.push(series.to_string());
        Some(id)
    }

    /// Drops every frame older than its tier keeps.
    fn prune(&self, now: u64) {
        for (tier, config) in self.tiers.iter().enumerate() {
            let cutoff = now.saturating_sub(config.keep.as_secs());
            let mut old = Vec::new();
            let start = frame_key(tier, 0);
            let _ = self.store.visit_from(
                Tree::Trends,
                &start,
                &mut |key, _| match parse_frame_key(key) {
                    Some((t, at)) if t == tier && at < cutoff => {
                        old.push(key.to_vec());
                        true
                    }
                    _ => false,
                },
            );
            for key in old {
                let _ = self.store.delete(Tree::Trends, &key);
            }
        }
    }

    /// The points of the series of `query.metric` that carry `query.labels`.
    pub fn query(&self, query: &TrendQuery, now: SystemTime) -> TrendAnswer {
        let now = unix_seconds(now);
        let (tier, step) = self.tier_for(query, now);
        let mut matched: BTreeMap<u32, TrendSeries> = {
            let index = self.index.lock().expect("trends lock");
            index
                .names
                .iter()
                .enumerate()
                .filter_map(|(id, series)| {
                    let line = format!("{series} 0");
                    let parsed = sample(&line)?;
                    if parsed.name != query.metric {
                        return None;
                    }
                    let labels: BTreeMap<String, String> = parsed
                        .labels()
                        .map(|(k, v)| (k.to_string(), v.into_owned()))
                        .collect();
                    let wanted = query.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
                    wanted.then(|| {
                        let points = Vec::new();
                        (id as u32, TrendSeries { labels, points })
                    })
                })
                .collect()
        };
        if !matched.is_empty() {
            let start = frame_key(tier, query.from);
            let _ = self
                .store
                .visit_from(Tree::Trends, &start, &mut |key, value| {
                    let Some((t, at)) = parse_frame_key(key) else {
                        return false;
                    };
                    if t != tier || at > query.to {
                        return false;
                    }
                    for (id, value) in decode(value) {
                        if let Some(series) = matched.get_mut(&id) {
                            series.points.push((at, value));
                        }
                    }
                    true
                });
        }
        let step = query.step.map_or(step, |wanted| wanted.max(step));
        let mut series: Vec<TrendSeries> = matched.into_values().collect();
        for one in &mut series {
            one.points = last_per_step(&one.points, step);
            if query.rate {
                one.points = rates(&one.points);
            }
        }
        TrendAnswer {
            metric: query.metric.clone(),
            step_seconds: step,
            series,
        }
    }

    /// The finest tier that still holds `query.from` and answers in at most [`MAX_POINTS`].
    fn tier_for(&self, query: &TrendQuery, now: u64) -> (usize, u64) {
        let age = now.saturating_sub(query.from);
        let span = query.to.saturating_sub(query.from);
        let fits = |config: &TrendTier| {
            let step = config.step.as_secs();
            age <= config.keep.as_secs() && span / step <= MAX_POINTS
        };
        let tier = self
            .tiers
            .iter()
            .position(fits)
            .unwrap_or(self.tiers.len() - 1);
        (tier, self.tiers[tier].step.as_secs())
    }

    /// Every metric recorded, with its number of series.
    pub fn metrics(&self) -> BTreeMap<String, usize> {
        let index = self.index.lock().expect("trends lock");
        let mut metrics = BTreeMap::new();
        for series in &index.names {
            let name = series.split('{').next().unwrap_or(series);
            *metrics.entry(name.to_string()).or_default() += 1;
        }
        metrics
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn frame_key(tier: usize, at: u64) -> Vec<u8> {
    let mut key = vec![b'f', tier as u8];
    key.extend_from_slice(&at.to_be_bytes());
    key
}

fn parse_frame_key(key: &[u8]) -> Option<(usize, u64)> {
    match key {
        [b'f', tier, at @ ..] => Some((*tier as usize, u64::from_be_bytes(at.try_into().ok()?))),
        _ => None,
    }
}

fn encode(frame: &[(u32, f64)]) -> Vec<u8> {
    let plain = postcard::to_stdvec(frame).expect("a Vec sink never fails");
    zstd::bulk::compress(&plain, FRAME_LEVEL).expect("zstd compresses any input")
}

/// A frame's pairs; nothing for a damaged one.
fn decode(bytes: &[u8]) -> Vec<(u32, f64)> {
    zstd::stream::decode_all(bytes)
        .ok()
        .and_then(|plain| postcard::from_bytes(&plain).ok())
        .unwrap_or_default()
}

/// The last point of each `step` (points are in time order), at the start of its step.
fn last_per_step(points: &[(u64, f64)], step: u64) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = Vec::with_capacity(points.len());
    for &(at, value) in points {
        let start = at - at % step;
        match out.last_mut() {
            Some(last) if last.0 == start => last.1 = value,
            _ => out.push((start, value)),
        }
    }
    out
}

/// Per-second increases between consecutive points; a drop (a restart reset the counter)
/// counts from zero.
fn rates(points: &[(u64, f64)]) -> Vec<(u64, f64)> {
    points
        .windows(2)
        .filter_map(|pair| {
            let ((t0, v0), (t1, v1)) = (pair[0], pair[1]);
            let seconds = t1.checked_sub(t0).filter(|s| *s > 0)? as f64;
            let increase = if v1 >= v0 { v1 - v0 } else { v1 };
            Some((t1, increase / seconds))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;
    use std::time::Duration;

    use super::*;
    use crate::store::SledStore;

    fn trends(dir: &std::path::Path, max_series: usize) -> Trends {
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir, 1 << 20, Duration::from_millis(100)).unwrap());
        let config = TrendsConfig {
            enabled: true,
            tiers: vec![
                TrendTier {
                    step: Duration::from_secs(1),
                    keep: Duration::from_secs(10),
                },
                TrendTier {
                    step: Duration::from_secs(5),
                    keep: Duration::from_secs(100),
                },
            ],
            max_series,
        };
        Trends::new(store, &config)
    }

    fn page(requests: f64) -> String {
        format!(
            "# TYPE r counter\nr_total{{route=\"a\"}} {requests}\nr_total{{route=\"b\"}} 1\n\
             h_bucket{{le=\"1\"}} 3\nh_count 3\n# EOF\n"
        )
    }

    fn query(metric: &str, from: u64, to: u64) -> TrendQuery {
        TrendQuery {
            metric: metric.into(),
            labels: vec![("route".into(), "a".into())],
            from,
            to,
            step: None,
            rate: false,
        }
    }

    #[test]
    fn frames_are_kept_per_tier_and_read_back_by_metric_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let trends = trends(dir.path(), 100);
        let t0 = 1_000_000_000;
        for s in 0..12 {
            trends.record(
                &page(10.0 * s as f64),
                UNIX_EPOCH + Duration::from_secs(t0 + s),
            );
        }
        let now = UNIX_EPOCH + Duration::from_secs(t0 + 11);
        let fine = trends.query(&query("r_total", t0 + 2, t0 + 11), now);
        assert_eq!(fine.step_seconds, 1);
        assert_eq!(fine.series.len(), 1);
        assert_eq!(fine.series[0].labels["route"], "a");
        assert_eq!(fine.series[0].points.len(), 10);
        assert_eq!(fine.series[0].points[0], (t0 + 2, 20.0));

        // Older than the fine tier keeps: read from the coarse one.
        let coarse = trends.query(&query("r_total", t0 - 10, t0 + 11), now);
        assert_eq!(coarse.step_seconds, 5);
        let points: Vec<u64> = coarse.series[0].points.iter().map(|p| p.0).collect();
        assert_eq!(points, [t0, t0 + 5, t0 + 10]);

        let mut rate = query("r_total", t0 + 2, t0 + 11);
        rate.rate = true;
        let rates = trends.query(&rate, now);
        assert!(rates.series[0].points.iter().all(|p| p.1 == 10.0));

        let mut every_4s = query("r_total", t0 + 2, t0 + 11);
        every_4s.step = Some(4);
        let resampled = trends.query(&every_4s, now);
        assert_eq!(resampled.step_seconds, 4);
        assert_eq!(
            resampled.series[0].points,
            [(t0, 30.0), (t0 + 4, 70.0), (t0 + 8, 110.0)],
            "the last value of each step"
        );

        assert_eq!(
            trends.metrics(),
            BTreeMap::from([("h_count".into(), 1), ("r_total".into(), 2)]),
            "buckets are left out"
        );
    }

    /// The frames tier `tier` holds.
    fn frames(trends: &Trends, tier: usize) -> usize {
        let mut count = 0;
        let _ = trends.store.visit(Tree::Trends, &mut |key, _| {
            count += usize::from(parse_frame_key(key).is_some_and(|(t, _)| t == tier));
            true
        });
        count
    }

    #[test]
    fn old_frames_are_dropped_and_series_ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_000_000_000;
        {
            let trends = trends(dir.path(), 100);
            for s in 0..30 {
                trends.record(&page(1.0), UNIX_EPOCH + Duration::from_secs(t0 + s));
            }
            // Pruned when the coarse tier last wrote (t0 + 25): the fine one keeps 10 s.
            assert_eq!(frames(&trends, 0), 15);
            assert_eq!(frames(&trends, 1), 6);
        }
        let trends = trends(dir.path(), 100);
        trends.record(&page(5.0), UNIX_EPOCH + Duration::from_secs(t0 + 30));
        let now = UNIX_EPOCH + Duration::from_secs(t0 + 30);
        let after = trends.query(&query("r_total", t0 + 25, t0 + 30), now);
        assert_eq!(after.series.len(), 1, "the same series after a restart");
        let points = &after.series[0].points;
        assert_eq!(points.len(), 6);
        assert_eq!(points.last(), Some(&(t0 + 30, 5.0)));
    }

    /// The disk a week of trends takes: 200 series (counters that grow, gauges that wander)
    /// recorded every second for 7 days of a fake clock, in the default tiers. A measurement,
    /// not a check: `cargo test -p gatehouse --lib seven_days -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement that takes about a minute"]
    #[allow(clippy::print_stdout)] // its result is the line it prints
    fn seven_days_at_200_series() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open(dir.path(), 64 << 20, Duration::from_secs(1)).unwrap());
        let trends = Trends::new(Arc::clone(&store), &TrendsConfig::default());
        let t0 = 1_800_000_000;
        let week = 7 * 24 * 3600;
        let mut page = String::new();
        for s in 0..week {
            page.clear();
            for series in 0..200u64 {
                let value = if series % 2 == 0 {
                    (s * (series + 1)) as f64
                } else {
                    ((s + series) % 97) as f64 / 7.0
                };
                let _ = writeln!(page, "m_total{{route=\"r{series}\"}} {value}");
            }
            trends.record(&page, UNIX_EPOCH + Duration::from_secs(t0 + s));
        }
        store.flush().unwrap();
        let mut frames = [0usize; 3];
        let mut bytes = 0usize;
        store
            .visit(Tree::Trends, &mut |key, value| {
                if let Some((tier, _)) = parse_frame_key(key) {
                    frames[tier] += 1;
                }
                bytes += key.len() + value.len();
                true
            })
            .unwrap();
        let on_disk = store.probe().unwrap().size_on_disk;
        println!(
            "trends after 7 days at 200 series: frames per tier {frames:?}, {:.1} MiB of keys and values, {:.1} MiB on disk",
            bytes as f64 / 1048576.0,
            on_disk as f64 / 1048576.0
        );
        // The fine tier is pruned each minute: an hour plus the minute since.
        assert_eq!(frames, [3660, 10080, 168]);
    }

    #[test]
    fn series_beyond_the_bound_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let trends = trends(dir.path(), 2);
        trends.record(&page(1.0), UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        assert_eq!(trends.metrics().values().sum::<usize>(), 2);
    }

    #[test]
    fn rates_count_a_reset_from_zero() {
        assert_eq!(
            rates(&[(0, 10.0), (2, 14.0), (3, 1.0)]),
            [(2, 2.0), (3, 1.0)]
        );
    }
}
