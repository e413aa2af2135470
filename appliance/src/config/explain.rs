//! The configuration in force as the web UI's config page shows it: every value by dotted key,
//! secrets hidden, each with where it came from (a line of the file, a variable, or the
//! default).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::load::Loaded;

/// What hidden values show instead.
pub const HIDDEN: &str = "***";

/// One value of the configuration.
#[derive(Debug, Serialize)]
pub struct Setting {
    /// The value (secrets hidden).
    pub value: Value,
    /// `FILE:LINE`, `env VARIABLE` or `default`.
    pub source: String,
}

/// Every value in force, by dotted key (`edge.routes.0.path`).
pub fn settings(loaded: &Loaded) -> BTreeMap<String, Setting> {
    let mut leaves = BTreeMap::new();
    let config = serde_json::to_value(&loaded.config).unwrap_or(Value::Null);
    flatten(&mut Vec::new(), redacted(config, ""), &mut leaves);
    leaves
        .into_iter()
        .map(|(path, value)| {
            let source = loaded.origin_of(&path);
            (path.join("."), Setting { value, source })
        })
        .collect()
}

/// `value` with secrets replaced: any key naming a password, token or secret, the headers sent
/// to a collector, and the credentials in URLs.
fn redacted(value: Value, key: &str) -> Value {
    let secret = ["password", "token", "secret"]
        .iter()
        .any(|word| key.contains(word))
        || key == "headers";
    match value {
        Value::Null => Value::Null,
        _ if secret => Value::String(HIDDEN.to_string()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = redacted(value, &key);
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redacted(v, key)).collect()),
        Value::String(text) => Value::String(without_credentials(text)),
        other => other,
    }
}

/// A URL's `user:password@` part hidden (`redis://:pw@host` → `redis://***@host`).
fn without_credentials(text: String) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text;
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{HIDDEN}{}", &rest[at..]),
        None => text,
    }
}

fn flatten(path: &mut Vec<String>, value: Value, out: &mut BTreeMap<Vec<String>, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                path.push(key);
                flatten(path, value, out);
                path.pop();
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            for (index, value) in items.into_iter().enumerate() {
                path.push(index.to_string());
                flatten(path, value, out);
                path.pop();
            }
        }
        leaf => {
            out.insert(path.clone(), leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_credentials_are_hidden() {
        let config = serde_json::json!({
            "admin": {"token": "gh_abc", "listen": "127.0.0.1:9901"},
            "pool": {"users": {"app": {"password": "pw"}}},
            "redis": {"url": "redis://:hunter2@127.0.0.1:6379/0"},
            "traces": {"headers": {"x-api-key": "k"}},
            "edge": {"routes": [{"path": "/api", "upstream": "http://user:pw@app:3000/x"}]},
        });
        let text = redacted(config, "").to_string();
        for secret in ["gh_abc", "\"pw\"", "hunter2", "\"k\"", "user:pw"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("redis://***@127.0.0.1:6379/0"), "{text}");
        assert!(text.contains("127.0.0.1:9901"), "{text}");
    }

    #[test]
    fn tables_and_arrays_of_tables_become_dotted_keys() {
        let mut out = BTreeMap::new();
        let value = serde_json::json!({"edge": {"routes": [{"path": "/"}], "listen": ["a", "b"]}});
        flatten(&mut Vec::new(), value, &mut out);
        let keys: Vec<String> = out.keys().map(|path| path.join(".")).collect();
        assert_eq!(keys, ["edge.listen", "edge.routes.0.path"]);
    }
}
