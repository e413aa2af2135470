//! Alerts: threshold rules judged on every reading of the metrics. A rule whose condition holds
//! for its `for` fires; it resolves when the condition no longer holds. Firings and resolutions
//! are kept in the state store (a bounded history) and POSTed to the webhook, if any, with
//! bounded retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::readings::Readings;
use super::totals::Totals;
use crate::config::{AlertRule, AlertSeverity, AlertsConfig, Config, Measure, WhenRedisDown};
use crate::policy::recommend_types::Snapshot;
use crate::store::{BoundedLog, Store, Tree};

/// A rule fired or resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The rule's severity.
    pub severity: AlertSeverity,
    /// What the rule watches, and of which route (none for events such as a certificate that
    /// cannot be obtained, which are raised where they happen rather than measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<Measure>,
    /// The route (`*` for all).
    pub route: String,
    /// The measure when it happened.
    pub value: Option<f64>,
    /// When (RFC 3339).
    pub at: String,
    /// One line for people: what crossed what.
    pub summary: String,
}

/// A rule and where it stands, for the admin API.
#[derive(Debug, Serialize)]
pub struct RuleReport {
    /// The rule as configured.
    #[serde(flatten)]
    pub rule: AlertRule,
    /// `ok`, `pending` (the condition holds, not yet for long enough) or `firing`.
    pub state: &'static str,
    /// Since when it has been pending or firing (RFC 3339).
    pub since: Option<String>,
    /// The measure at the last reading (none when there was too little traffic to judge).
    pub value: Option<f64>,
}

/// Every rule, and the latest events first.
#[derive(Debug, Serialize)]
pub struct AlertsReport {
    /// The rules in force.
    pub rules: Vec<RuleReport>,
    /// The most recent firings and resolutions, newest first.
    pub history: Vec<AlertEvent>,
}

#[derive(Debug, Default, Clone)]
struct RuleState {
    /// When the condition started holding, while it holds.
    since: Option<SystemTime>,
    firing: bool,
    value: Option<f64>,
}

/// The rules, their states and the history.
pub struct Alerts {
    readings: Arc<Readings>,
    rules: Mutex<Vec<(AlertRule, RuleState)>>,
    history: BoundedLog,
    webhook: Mutex<Option<Webhook>>,
}

impl Alerts {
    /// The rules of `config` over `readings`, with their history in `store`.
    pub fn new(readings: Arc<Readings>, store: Arc<dyn Store>, config: &Config) -> Self {
        let alerts = Self {
            readings,
            rules: Mutex::default(),
            history: BoundedLog::new(store, Tree::Alerts, config.alerts.history),
            webhook: Mutex::default(),
        };
        alerts.reload(config);
        alerts
    }

    /// Takes the rules and the webhook of `config`. A rule that is unchanged keeps its state
    /// (a firing rule stays firing); a new or changed one starts afresh.
    pub fn reload(&self, config: &Config) {
        let mut rules = self.rules.lock().expect("alert rules lock");
        let before = std::mem::take(&mut *rules);
        *rules = rules_in_force(config)
            .into_iter()
            .map(|rule| {
                let state = before
                    .iter()
                    .find(|(old, _)| *old == rule)
                    .map(|(_, state)| state.clone())
                    .unwrap_or_default();
                (rule, state)
            })
            .collect();
        let alerts = &config.alerts;
        *self.webhook.lock().expect("webhook lock") =
            alerts.webhook.as_ref().map(|url| Webhook::new(url, alerts));
    }

    /// Judges every rule against the traffic up to `now`; returns what fired or resolved.
    pub fn evaluate(&self, now: &Totals) -> Vec<AlertEvent> {
        let wall = SystemTime::now();
        let mut windows: Vec<(Duration, Snapshot)> = Vec::new();
        let mut events = Vec::new();
        let mut rules = self.rules.lock().expect("alert rules lock");
        for (rule, state) in rules.iter_mut() {
            let snapshot = match windows.iter().find(|(w, _)| *w == rule.window) {
                Some((_, snapshot)) => snapshot,
                None => {
                    let (snapshot, _) = self.readings.snapshot(rule.window, now);
                    windows.push((rule.window, snapshot));
                    &windows.last().expect("pushed").1
                }
            };
            let value = measure(snapshot, now, rule);
            state.value = value;
            if let Some(event) = step(rule, state, value, wall) {
                events.push(event);
            }
        }
        drop(rules);
        for event in &events {
            self.record(event);
        }
        events
    }

    /// Sends `events` to the webhook, each on a task of its own (call from the serving thread).
    pub fn notify(&self, events: Vec<AlertEvent>) {
        let webhook = self.webhook.lock().expect("webhook lock").clone();
        if let Some(webhook) = webhook {
            for event in events {
                actix_rt::spawn(webhook.clone().deliver(event));
            }
        }
    }

    /// Records and notifies an event raised by a subsystem (`state` is `firing` or `resolved`):
    /// it goes to the history, the log and the webhook like a rule's.
    pub fn raise(&self, name: &str, severity: AlertSeverity, state: &str, summary: String) {
        let event = AlertEvent {
            rule: name.to_string(),
            state: state.to_string(),
            severity,
            measure: None,
            route: "*".into(),
            value: None,
            at: rfc3339(SystemTime::now()),
            summary,
        };
        self.record(&event);
        self.notify(vec![event]);
    }

    /// The rules and the latest events.
    pub fn report(&self, latest: usize) -> AlertsReport {
        let rules = self
            .rules
            .lock()
            .expect("alert rules lock")
            .iter()
            .map(|(rule, state)| {
                let state = state.clone();
                RuleReport {
                    rule: rule.clone(),
                    state: match (state.firing, state.since) {
                        (true, _) => "firing",
                        (false, Some(_)) => "pending",
                        (false, None) => "ok",
                    },
                    since: state.since.map(rfc3339),
                    value: state.value,
                }
            })
            .collect();
        AlertsReport {
            rules,
            history: self.history.latest(latest),
        }
    }

    fn record(&self, event: &AlertEvent) {
        log_event(event);
        if let Err(err) = self.history.append(event) {
            error!(error = %err, "cannot keep an alert in the history");
        }
    }
}

/// The built-in rules (unless turned off; `redis-down` with Redis on, critical when shared
/// limits then refuse), with configured rules of the same name replacing them, then the other
/// configured rules.
fn rules_in_force(config: &Config) -> Vec<AlertRule> {
    let alerts = &config.alerts;
    let mut rules = Vec::new();
    if alerts.defaults {
        rules = AlertRule::defaults();
        if config.redis.enabled {
            let severity = match config.rate_limits.when_redis_down {
                WhenRedisDown::Closed => AlertSeverity::Critical,
                WhenRedisDown::Open => AlertSeverity::Warning,
            };
            rules.push(AlertRule::redis_down(severity));
        }
        rules.retain(|default| alerts.rules.iter().all(|rule| rule.name != default.name));
    }
    rules.extend(alerts.rules.iter().cloned());
    rules
}

/// The rule's measure in `snapshot` (gauges such as Redis's state are read as of `now`); none
/// when it is not known or the route is too quiet.
fn measure(snapshot: &Snapshot, now: &Totals, rule: &AlertRule) -> Option<f64> {
    match rule.measure {
        Measure::RedisUp => return now.redis_up,
        Measure::CpuPercent => return Some(snapshot.cpu_percent),
        Measure::MemoryPercent => return Some(snapshot.memory_percent),
        Measure::PoolUsageRatio => {
            return snapshot
                .pools
                .iter()
                .map(|p| p.usage_ratio)
                .reduce(f64::max);
        }
        _ => {}
    }
    let traffic = snapshot.traffic.iter().find(|t| t.route == rule.route);
    let Some(traffic) = traffic else {
        // No request on the route at all: a rate of zero, and nothing else to judge.
        return (rule.measure == Measure::RequestsPerSecond).then_some(0.0);
    };
    if rule.measure == Measure::RequestsPerSecond {
        return Some(traffic.requests_per_second);
    }
    if traffic.requests_per_second < rule.min_requests_per_second {
        return None;
    }
    match rule.measure {
        Measure::LatencyAvgMs => Some(traffic.latency_avg_ms),
        Measure::LatencyP50Ms => Some(traffic.latency_p50_ms),
        Measure::LatencyP90Ms => Some(traffic.latency_p90_ms),
        Measure::LatencyP99Ms => Some(traffic.latency_p99_ms),
        Measure::LatencyP999Ms => Some(traffic.latency_p999_ms),
        Measure::ErrorRatio => Some(traffic.error_ratio),
        Measure::CacheHitRatio => traffic.cache_hit_ratio,
        _ => None,
    }
}

/// Moves `state` on by one reading; the event, when the rule fired or resolved.
fn step(
    rule: &AlertRule,
    state: &mut RuleState,
    value: Option<f64>,
    now: SystemTime,
) -> Option<AlertEvent> {
    let holds = value.is_some_and(|v| {
        rule.above.is_some_and(|limit| v > limit) || rule.below.is_some_and(|limit| v < limit)
    });
    if !holds {
        state.since = None;
        return std::mem::take(&mut state.firing).then(|| event(rule, "resolved", value, now));
    }
    let since = *state.since.get_or_insert(now);
    if state.firing || now.duration_since(since).unwrap_or_default() < rule.hold {
        return None;
    }
    state.firing = true;
    Some(event(rule, "firing", value, now))
}

fn event(rule: &AlertRule, state: &str, value: Option<f64>, at: SystemTime) -> AlertEvent {
    let condition = match (rule.above, rule.below) {
        (Some(limit), _) => format!("above {limit}"),
        (_, Some(limit)) => format!("below {limit}"),
        _ => String::new(),
    };
    let measure = serde_json::to_value(rule.measure)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let now = value.map_or("unknown".into(), |v| format!("{v:.3}"));
    AlertEvent {
        rule: rule.name.clone(),
        state: state.into(),
        severity: rule.severity,
        measure: Some(rule.measure),
        route: rule.route.clone(),
        value,
        at: rfc3339(at),
        summary: format!(
            "{}: {measure} of route {} {condition} (now {now})",
            rule.name, rule.route
        ),
    }
}

/// `at` as an RFC 3339 UTC timestamp to the second.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn log_event(event: &AlertEvent) {
    if event.state == "firing" {
        warn!(rule = %event.rule, severity = ?event.severity, "alert firing: {}", event.summary);
    } else {
        info!(rule = %event.rule, "alert resolved: {}", event.summary);
    }
}

/// Where events are POSTed.
#[derive(Clone)]
struct Webhook {
    client: reqwest::Client,
    url: Arc<str>,
    attempts: u32,
}

impl Webhook {
    fn new(url: &str, config: &AlertsConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .build()
            .unwrap_or_default();
        Self {
            client,
            url: url.into(),
            attempts: config.webhook_attempts.max(1),
        }
    }

    /// POSTs `event`, retrying failures (errors and non-2xx answers) with a doubling pause.
    async fn deliver(self, event: AlertEvent) {
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=self.attempts {
            let outcome = self.client.post(&*self.url).json(&event).send().await;
            let why = match outcome {
                Ok(answer) if answer.status().is_success() => return,
                Ok(answer) => format!("answered {}", answer.status()),
                Err(err) => err.to_string(),
            };
            if attempt == self.attempts {
                error!(rule = %event.rule, url = %self.url, attempts = self.attempts, why,
                    "alert webhook failed; giving up on this notification");
                return;
            }
            warn!(rule = %event.rule, url = %self.url, attempt, why, "alert webhook failed; retrying");
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn rule(hold: u64) -> AlertRule {
        AlertRule {
            name: "errors".into(),
            measure: Measure::ErrorRatio,
            route: "*".into(),
            above: Some(0.02),
            below: None,
            hold: Duration::from_secs(hold),
            window: Duration::from_secs(60),
            severity: AlertSeverity::Critical,
            min_requests_per_second: 0.1,
        }
    }

    #[test]
    fn a_rule_fires_after_holding_for_its_duration_and_resolves_once() {
        let rule = rule(120);
        let mut state = RuleState::default();
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s| start + Duration::from_secs(s);
        assert!(
            step(&rule, &mut state, Some(0.05), at(0)).is_none(),
            "pending"
        );
        assert!(
            step(&rule, &mut state, Some(0.05), at(60)).is_none(),
            "still pending"
        );
        let fired = step(&rule, &mut state, Some(0.05), at(120)).expect("fires at 2 minutes");
        assert_eq!(fired.state, "firing");
        assert!(fired.summary.contains("error_ratio"), "{}", fired.summary);
        assert!(
            step(&rule, &mut state, Some(0.06), at(130)).is_none(),
            "fires once"
        );
        let resolved = step(&rule, &mut state, Some(0.01), at(140)).expect("resolves");
        assert_eq!(resolved.state, "resolved");
        assert!(step(&rule, &mut state, None, at(150)).is_none());
    }

    #[test]
    fn a_condition_that_lapses_starts_its_hold_again() {
        let rule = rule(120);
        let mut state = RuleState::default();
        let start = UNIX_EPOCH;
        let at = |s| start + Duration::from_secs(s);
        step(&rule, &mut state, Some(0.05), at(0));
        step(&rule, &mut state, Some(0.0), at(100));
        assert!(step(&rule, &mut state, Some(0.05), at(130)).is_none());
        assert!(step(&rule, &mut state, Some(0.05), at(250)).is_some());
    }

    #[test]
    fn configured_rules_replace_defaults_of_the_same_name() {
        let mut config = Config::default();
        let mut stricter = rule(0);
        stricter.name = "cpu-high".into();
        config.alerts.rules.push(stricter);
        let rules = rules_in_force(&config);
        assert_eq!(rules.len(), 5);
        let cpu: Vec<_> = rules.iter().filter(|r| r.name == "cpu-high").collect();
        assert_eq!(cpu.len(), 1);
        assert_eq!(cpu[0].measure, Measure::ErrorRatio);
        config.alerts.defaults = false;
        assert_eq!(rules_in_force(&config).len(), 1);
    }

    #[test]
    fn with_redis_a_lost_connection_is_a_rule_critical_when_limits_then_refuse() {
        let mut config = Config::default();
        config.redis.enabled = true;
        let redis = |config: &Config| {
            rules_in_force(config)
                .into_iter()
                .find(|rule| rule.name == "redis-down")
                .map(|rule| rule.severity)
        };
        assert_eq!(redis(&config), Some(AlertSeverity::Warning));
        config.rate_limits.when_redis_down = WhenRedisDown::Closed;
        assert_eq!(redis(&config), Some(AlertSeverity::Critical));
        config.redis.enabled = false;
        assert_eq!(redis(&config), None);
    }
}
