//! The plugin author's workflow behind `gatehouse policy`: scaffold a crate, build it to a
//! component, and run it in the real host against fixtures, with its fuel (instructions) counted.

mod scaffold;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

pub use scaffold::new_plugin;

use super::cache_types::Response;
use super::recommend_types::Snapshot;
use super::{
    Grant, Inspection, Limits, LoadError, PluginKind, PluginSpec, PluginVersion, PolicyEngine,
    Request,
};

/// Why a `gatehouse policy` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The fixture is not valid JSON of the expected shape.
    #[error("fixture {0}: {1}")]
    Fixture(String, String),
    /// `cargo build` failed.
    #[error("cargo build failed ({0}); its output is above")]
    Build(String),
    /// The component is not a usable plugin.
    #[error("{0}")]
    Load(#[from] LoadError),
}

/// What `gatehouse policy build` produced.
#[derive(Debug)]
pub struct Built {
    /// The component.
    pub wasm: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub inspection: Inspection,
}

/// Builds the plugin crate in `dir` for wasm32-wasip2 (release) and checks the component loads.
pub fn build(dir: &Path) -> Result<Built, ToolError> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| ToolError::Io(manifest.display().to_string(), e))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| ToolError::Usage(format!("{}: {e}", manifest.display())))?;
    let name = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| {
            ToolError::Usage(format!(
                "{}: no [package] name; run this in a plugin crate",
                manifest.display()
            ))
        })?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .map_err(|e| ToolError::Io("cargo".into(), e))?;
    if !status.success() {
        return Err(ToolError::Build(status.to_string()));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let inspection = inspect(&wasm)?;
    let size = std::fs::metadata(&wasm)
        .map_err(|e| ToolError::Io(wasm.display().to_string(), e))?
        .len();
    Ok(Built {
        wasm,
        size,
        inspection,
    })
}

/// What the component at `wasm` is.
pub fn inspect(wasm: &Path) -> Result<Inspection, ToolError> {
    let bytes = std::fs::read(wasm).map_err(|e| ToolError::Io(wasm.display().to_string(), e))?;
    Ok(PolicyEngine::new(None)?.inspect(&bytes)?)
}

/// A fixture: what to load the plugin with, and the calls to make.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// Defaults to what the component's exports make it.
    kind: Option<PluginKind>,
    /// The plugin's config, as in gatehouse.toml. Default `{}`.
    #[serde(default)]
    config: Option<serde_json::Value>,
    /// Defaults to every grant its imports need.
    grants: Option<BTreeSet<Grant>>,
    calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    #[serde(default)]
    request: FixtureRequest,
    /// For cache rules: the response `on-response` decides on.
    response: Option<FixtureResponse>,
    /// For recommendations.
    snapshot: Option<Snapshot>,
    /// What the result must contain (objects may leave fields out); the call fails otherwise.
    expect: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FixtureRequest {
    method: String,
    path: String,
    query: String,
    host: String,
    route: String,
    client_ip: String,
    headers: BTreeMap<String, String>,
    cookies: BTreeMap<String, String>,
}

impl Default for FixtureRequest {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            host: "localhost".into(),
            route: "default".into(),
            client_ip: "127.0.0.1".into(),
            headers: BTreeMap::new(),
            cookies: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureResponse {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// One call's outcome.
#[derive(Debug)]
pub struct Outcome {
    /// A one-line description of the input.
    pub input: String,
    /// The decision as JSON, or why there was none.
    pub result: Result<serde_json::Value, String>,
    /// Fuel used: about one unit per wasm instruction.
    pub fuel: u64,
    /// Wall time (metered code runs slower than in production).
    pub elapsed: Duration,
    /// What the fixture expected, if it said.
    pub expected: Option<serde_json::Value>,
}

impl Outcome {
    /// Whether the call went as the fixture says: a result, and the expected one if given.
    pub fn passed(&self) -> bool {
        match (&self.result, &self.expected) {
            (Err(_), _) => false,
            (Ok(_), None) => true,
            (Ok(actual), Some(expected)) => contains(actual, expected),
        }
    }
}

/// `expected` matches `actual`, where an expected object may name only some of the fields.
fn contains(actual: &serde_json::Value, expected: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected
            .iter()
            .all(|(key, want)| actual.get(key).is_some_and(|got| contains(got, want))),
        (Value::Array(actual), Value::Array(expected)) => {
            actual.len() == expected.len()
                && actual
                    .iter()
                    .zip(expected)
                    .all(|(got, want)| contains(got, want))
        }
        _ => actual == expected,
    }
}

/// Runs the fixture's calls on `wasm` in the real host, with fuel metering on.
pub fn test(wasm_path: &Path, fixture_path: &Path) -> Result<Vec<Outcome>, ToolError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| ToolError::Io(p.display().to_string(), e));
    let wasm = read(wasm_path)?;
    let fixture_name = fixture_path.display().to_string();
    let fixture: Fixture = serde_json::from_slice(&read(fixture_path)?)
        .map_err(|e| ToolError::Fixture(fixture_name.clone(), e.to_string()))?;
    let engine = PolicyEngine::metered()?;
    let inspection = engine.inspect(&wasm)?;
    let kind = fixture.kind.or(inspection.kind).ok_or_else(|| {
        ToolError::Usage(format!(
            "{}: exports no policy function (decide, on-request, recommend)",
            wasm_path.display()
        ))
    })?;
    let spec = PluginSpec {
        name: wasm_path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned()),
        kind,
        config: fixture
            .config
            .unwrap_or_else(|| serde_json::json!({}))
            .to_string(),
        grants: fixture.grants.unwrap_or(inspection.grants),
        limits: Limits {
            deadline: Duration::from_secs(1),
            memory_bytes: super::MAX_MEMORY,
            kv_bytes: 1 << 20,
        },
    };
    let plugin = engine.load(spec, &wasm)?;
    fixture
        .calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            run(&plugin, call).map_err(|why| {
                ToolError::Fixture(fixture_name.clone(), format!("call {}: {why}", i + 1))
            })
        })
        .collect()
}

fn run(plugin: &Arc<PluginVersion>, call: &Call) -> Result<Outcome, String> {
    let r = &call.request;
    let request = Request {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        host: r.host.clone(),
        route: r.route.clone(),
        client_ip: r.client_ip.clone(),
    };
    let mut http = actix_web::test::TestRequest::default().method(
        r.method
            .parse()
            .map_err(|_| format!("bad method {:?}", r.method))?,
    );
    for (name, value) in &r.headers {
        http = http.insert_header((name.as_str(), value.as_str()));
    }
    if !r.cookies.is_empty() {
        let cookies: Vec<String> = r.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        http = http.insert_header(("cookie", cookies.join("; ")));
    }
    let http = http.to_http_request();
    let fuel_before = plugin.stats.fuel.load(Ordering::Relaxed);
    let started = Instant::now();
    let (input, result) = match plugin.kind {
        PluginKind::RateLimit => (describe(r), plugin.decide(&request, Some(&http)).map(json)),
        PluginKind::CacheRules => match &call.response {
            None => (
                describe(r),
                plugin.on_request(&request, Some(&http)).map(json),
            ),
            Some(response) => {
                let headers = header_map(&response.headers)?;
                let status = Response {
                    status: response.status,
                };
                let input = format!("{} -> {}", describe(r), response.status);
                let rule = plugin.on_request(&request, Some(&http)).and_then(|on_request| {
                    let on_response = plugin.on_response(&request, &status, &headers, Some(&http))?;
                    Ok(serde_json::json!({ "on_request": json(on_request), "on_response": json(on_response) }))
                });
                (input, rule)
            }
        },
        PluginKind::Recommendations => {
            let snapshot = call
                .snapshot
                .as_ref()
                .ok_or("a recommendations call needs a snapshot")?;
            ("snapshot".to_string(), plugin.recommend(snapshot).map(json))
        }
    };
    let elapsed = started.elapsed();
    let fuel = plugin.stats.fuel.load(Ordering::Relaxed) - fuel_before;
    Ok(Outcome {
        input,
        result: result.map_err(|e| e.to_string()),
        fuel,
        elapsed,
        expected: call.expect.clone(),
    })
}

fn describe(r: &FixtureRequest) -> String {
    let query = if r.query.is_empty() {
        String::new()
    } else {
        format!("?{}", r.query)
    };
    format!("{} {}{query}", r.method, r.path)
}

fn json(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| serde_json::Value::String(e.to_string()))
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name =
            HeaderName::try_from(name.as_str()).map_err(|_| format!("bad header name {name:?}"))?;
        let value =
            HeaderValue::try_from(value.as_str()).map_err(|_| format!("bad value for {name}"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::contains;

    #[test]
    fn an_expectation_may_name_only_some_fields() {
        let actual = json!({ "Limit": { "key": "ip:1", "quota": { "limit": 5, "burst": 1 } } });
        assert!(contains(
            &actual,
            &json!({ "Limit": { "quota": { "limit": 5 } } })
        ));
        assert!(!contains(
            &actual,
            &json!({ "Limit": { "quota": { "limit": 6 } } })
        ));
        assert!(!contains(&actual, &json!({ "Deny": {} })));
        assert!(contains(&json!([1, 2]), &json!([1, 2])));
        assert!(!contains(&json!([1, 2]), &json!([1])), "arrays match whole");
        assert!(!contains(&json!("Bypass"), &json!({ "Lookup": [] })));
    }
}
