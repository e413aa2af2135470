//! Recommendations: a snapshot of the last `monitoring.window` of traffic, judged by the
//! recommendation plugins, on a schedule and on demand, off the request path. Without a
//! configured recommendation plugin the built-in one judges, loaded the first time it is needed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;

use super::readings::Readings;
use crate::config::PluginConfig;
use crate::policy::recommend_types::{Recommendation, Severity, Snapshot};
use crate::policy::{PluginKind, Plugins, PolicyEngine};
use crate::store::Store;

/// What the recommendation plugins said about one snapshot.
#[derive(Debug, Serialize)]
pub struct Advice {
    /// When it was made (RFC 3339).
    pub generated_at: String,
    /// The span the snapshot covers, in seconds (shorter just after start).
    pub window_seconds: f64,
    /// Most severe first.
    pub recommendations: Vec<Advised>,
    /// Plugins that failed on this snapshot, and why.
    pub failures: Vec<Failure>,
    /// What the plugins judged.
    pub snapshot: Snapshot,
}

/// One recommendation and the plugin that made it.
#[derive(Debug, Serialize)]
pub struct Advised {
    /// The plugin's name.
    pub plugin: String,
    /// Stable across snapshots while the condition lasts.
    pub id: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// One line.
    pub title: String,
    /// What it means and what to do.
    pub detail: String,
    /// A config change that would address it, as TOML.
    pub suggested_change: Option<String>,
}

/// A plugin that could not judge.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// The plugin's name.
    pub plugin: String,
    /// Why.
    pub error: String,
}

/// Makes and keeps the latest advice.
pub struct Advisor {
    readings: Arc<Readings>,
    store: Arc<dyn Store>,
    window: Duration,
    latest: Mutex<Option<Arc<Advice>>>,
    /// The built-in plugin (and the engine it runs on), when none is configured.
    builtin: OnceLock<Result<(PolicyEngine, Plugins), String>>,
}

impl Advisor {
    /// An advisor judging the last `window` of `readings`.
    pub fn new(readings: Arc<Readings>, store: Arc<dyn Store>, window: Duration) -> Self {
        Self {
            readings,
            store,
            window,
            latest: Mutex::new(None),
            builtin: OnceLock::new(),
        }
    }

    /// The traffic of the window up to now, and the span it really covers.
    pub fn snapshot(&self) -> (Snapshot, Duration) {
        self.readings.snapshot(self.window, &self.readings.read())
    }

    /// The latest advice, made now if there is none yet.
    pub fn latest(&self) -> Arc<Advice> {
        let latest = self.latest.lock().expect("advice lock").clone();
        latest.unwrap_or_else(|| self.refresh())
    }

    /// Judges a new snapshot now.
    pub fn refresh(&self) -> Arc<Advice> {
        let (snapshot, span) = self.snapshot();
        let mut recommendations = Vec::new();
        let mut failures = Vec::new();
        self.each_plugin(|name, plugin| match plugin.current().recommend(&snapshot) {
            Ok(list) => recommendations.extend(list.into_iter().map(|r| advised(name, r))),
            Err(err) => failures.push(Failure {
                plugin: name.to_string(),
                error: err.to_string(),
            }),
        })
        .unwrap_or_else(|error| {
            failures.push(Failure {
                plugin: "builtin:recommendations".into(),
                error,
            });
        });
        recommendations.sort_by(|a, b| {
            rank(a.severity)
                .cmp(&rank(b.severity))
                .then_with(|| a.id.cmp(&b.id))
        });
        let advice = Arc::new(Advice {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            window_seconds: span.as_secs_f64(),
            recommendations,
            failures,
            snapshot,
        });
        *self.latest.lock().expect("advice lock") = Some(Arc::clone(&advice));
        advice
    }

    /// Calls `judge` with each configured recommendation plugin, or with the built-in one.
    fn each_plugin(
        &self,
        mut judge: impl FnMut(&str, &crate::policy::Plugin),
    ) -> Result<(), String> {
        let runtime = self.readings.edge().runtime();
        let mut configured = runtime
            .plugins
            .iter()
            .filter(|(_, plugin)| plugin.current().kind == PluginKind::Recommendations)
            .peekable();
        if configured.peek().is_some() {
            configured.for_each(|(name, plugin)| judge(name, plugin));
            return Ok(());
        }
        let (_, plugins) = self
            .builtin
            .get_or_init(|| load_builtin(Arc::clone(&self.store)))
            .as_ref()
            .map_err(Clone::clone)?;
        plugins
            .iter()
            .for_each(|(name, plugin)| judge(name, plugin));
        Ok(())
    }
}

/// The built-in recommendations with their default settings, on an engine of their own.
fn load_builtin(store: Arc<dyn Store>) -> Result<(PolicyEngine, Plugins), String> {
    let started = Instant::now();
    let engine = PolicyEngine::new(Some(store)).map_err(|err| err.to_string())?;
    let config: PluginConfig = serde_json::from_value(serde_json::json!({
        "kind": "recommendations",
        "source": "builtin:recommendations",
    }))
    .map_err(|err| err.to_string())?;
    let configs = BTreeMap::from([("recommendations".to_string(), config)]);
    let plugins = Plugins::default()
        .prepare(&engine, &configs)
        .map_err(|problems| {
            let why: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            why.join("; ")
        })?
        .commit();
    info!(took = ?started.elapsed(), "built-in recommendations loaded");
    Ok((engine, plugins))
}

fn advised(plugin: &str, recommendation: Recommendation) -> Advised {
    Advised {
        plugin: plugin.to_string(),
        id: recommendation.id,
        severity: match recommendation.severity {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        },
        title: recommendation.title,
        detail: recommendation.detail,
        suggested_change: recommendation.suggested_change,
    }
}

/// Sort order: most severe first.
fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "warning" => 1,
        _ => 2,
    }
}
