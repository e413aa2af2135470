//! The environment layer: `GATEHOUSE_SECTION__KEY=value`, plus the variable names the reference
//! deployments already have in their `.env` files.
//!
//! The variables are passed in (not read here) so tests can give a map instead of mutating the
//! process environment.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// Prefix of gatehouse's own variables; `__` separates nested keys.
const PREFIX: &str = "GATEHOUSE_";

/// Reference-deployment variables and the config keys they set.
pub(super) const ALIASES: &[(&str, &str)] = &[
    ("DB_POOL_SIZE", "pool.pool_size"),
    ("DB_MAX_OVERFLOW", "pool.max_overflow"),
    ("DB_POOL_TIMEOUT", "pool.pool_timeout"),
    ("DB_POOL_RECYCLE", "pool.recycle"),
    ("ENABLE_PERFORMANCE_MONITORING", "monitoring.enabled"),
    ("HORIZONTAL_SCALING_ENABLED", "redis.enabled"),
];

/// Metadata name of this layer; [`super::locate`] uses it to say which variable was wrong.
pub(super) const NAME: &str = "environment";

/// A figment provider over a list of environment variables.
#[derive(Clone)]
pub(super) struct Environment {
    /// The variables that apply, in ascending precedence.
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// Dotted config key, e.g. `pool.pool_size`.
    key: String,
    value: String,
    /// The variable it came from, for error messages.
    variable: String,
}

impl Environment {
    /// Keeps the variables that configure gatehouse. Aliases come first so that an explicit
    /// `GATEHOUSE_` variable for the same key wins.
    pub(super) fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let aliased = ALIASES.iter().filter_map(|(var, key)| {
            let (name, value) = vars.iter().find(|(name, _)| name == var)?;
            Some(Entry {
                key: key.to_string(),
                value: value.clone(),
                variable: name.clone(),
            })
        });
        let prefixed = vars.iter().filter_map(|(name, value)| {
            let rest = name.strip_prefix(PREFIX)?;
            let key = rest.to_ascii_lowercase().replace("__", ".");
            Some(Entry {
                key,
                value: value.clone(),
                variable: name.clone(),
            })
        });
        let mut entries: Vec<Entry> = aliased.collect();
        entries.extend(prefixed);
        Self { entries }
    }

    /// The variable that set `key` (or something below it), for error messages.
    pub(super) fn variable_for(&self, key: &str) -> Option<&str> {
        let below = format!("{key}.");
        self.entries
            .iter()
            .rev()
            .find(|e| e.key == key || e.key.starts_with(&below))
            .map(|e| e.variable.as_str())
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named(NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut root = Dict::new();
        for entry in &self.entries {
            let value: Value = entry
                .value
                .parse()
                .expect("figment value parsing is infallible");
            insert(&mut root, &entry.key, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// Inserts `value` at the dotted `key`, creating the dictionaries on the way.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            dict.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let child = dict
                .entry(head.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(child, Value::Dict(..)) {
                *child = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = child {
                insert(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn prefixed_variables_nest_on_double_underscore() {
        let env = Environment::new(vars(&[("GATEHOUSE_EDGE__WORKERS", "4"), ("HOME", "/root")]));
        let keys: Vec<_> = env
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        assert_eq!(keys, ["edge.workers=4"]);
    }

    #[test]
    fn explicit_variable_outranks_alias() {
        let env = Environment::new(vars(&[
            ("GATEHOUSE_POOL__POOL_SIZE", "7"),
            ("DB_POOL_SIZE", "10"),
        ]));
        let keys: Vec<_> = env
            .entries
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        assert_eq!(keys, ["pool.pool_size=10", "pool.pool_size=7"]);
        assert_eq!(
            env.variable_for("pool.pool_size"),
            Some("GATEHOUSE_POOL__POOL_SIZE")
        );
    }

    #[test]
    fn names_the_variable_behind_a_key() {
        let env = Environment::new(vars(&[
            ("DB_POOL_RECYCLE", "300"),
            ("GATEHOUSE_EDGE__TLS__CERT", "/x"),
        ]));
        assert_eq!(env.variable_for("pool.recycle"), Some("DB_POOL_RECYCLE"));
        assert_eq!(
            env.variable_for("edge.tls"),
            Some("GATEHOUSE_EDGE__TLS__CERT")
        );
        assert_eq!(env.variable_for("edge.workers"), None);
    }
}
