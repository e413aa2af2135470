//! A client's session settings: its startup parameters and the `SET`s it ran. A server
//! connection remembers the fingerprint of the settings it carries; a client that gets a server
//! with another fingerprint has its own applied first (one round trip, only on a change).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::sql::SettingChange;

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

#[derive(Debug, Default)]
pub(crate) struct Settings {
    /// From the startup packet (and `options=-c name=value`).
    startup: BTreeMap<String, String>,
    /// `SET` statements by setting name, as written.
    sets: BTreeMap<String, String>,
    fingerprint: u64,
}

impl Settings {
    pub(crate) fn from_startup(params: &[(String, String)]) -> Self {
        let mut startup = BTreeMap::new();
        for (name, value) in params {
            if name == "options" {
                startup.extend(options(value));
            } else if !NOT_SETTINGS.contains(&name.as_str()) && !name.starts_with("_pq_.") {
                startup.insert(name.clone(), value.clone());
            }
        }
        let mut settings = Self {
            startup,
            sets: BTreeMap::new(),
            fingerprint: 0,
        };
        settings.refresh();
        settings
    }

    /// The startup value of `name`, for the ParameterStatus a client sees at login.
    pub(crate) fn startup_value(&self, name: &str) -> Option<&str> {
        self.startup
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn apply(&mut self, change: SettingChange) {
        match change {
            SettingChange::Set { name, statement } => {
                self.sets.insert(name, statement);
            }
            SettingChange::Reset(name) => {
                self.sets.remove(&name);
            }
            SettingChange::ResetAll => self.sets.clear(),
        }
        self.refresh();
    }

    /// 0 for a client with no settings, which any fresh server connection matches.
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn refresh(&mut self) {
        self.fingerprint = if self.startup.is_empty() && self.sets.is_empty() {
            0
        } else {
            let mut text = String::new();
            for (name, value) in &self.startup {
                let _ = write!(text, "{name}\0{value}\0");
            }
            text.push('\u{1}');
            for statement in self.sets.values() {
                let _ = write!(text, "{statement}\0");
            }
            xxhash_rust::xxh3::xxh3_64(text.as_bytes()).max(1)
        };
    }

    /// SQL that turns any server connection's session into this client's.
    pub(crate) fn sql(&self) -> String {
        // The role survives RESET ALL; SESSION AUTHORIZATION DEFAULT resets it too.
        let mut sql = String::from("SET SESSION AUTHORIZATION DEFAULT; RESET ALL");
        for (name, value) in &self.startup {
            let _ = write!(sql, "; SET {} TO {}", identifier(name), literal(value));
        }
        for statement in self.sets.values() {
            let _ = write!(sql, "; {statement}");
        }
        sql
    }
}

/// `-c name=value` and `--name=value` from the `options` startup parameter.
fn options(value: &str) -> Vec<(String, String)> {
    let mut words = value.split_ascii_whitespace();
    let mut pairs = Vec::new();
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next(),
            _ => word.strip_prefix("-c").or_else(|| word.strip_prefix("--")),
        };
        if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
            pairs.push((name.replace('-', "_"), value.to_string()));
        }
    }
    pairs
}

fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_client_without_settings_matches_a_fresh_server() {
        let settings = Settings::from_startup(&params(&[("user", "app"), ("database", "shop")]));
        assert_eq!(settings.fingerprint(), 0);
    }

    #[test]
    fn startup_parameters_and_sets_make_the_session() {
        let mut settings = Settings::from_startup(&params(&[
            ("user", "app"),
            ("application_name", "it's"),
            ("options", "-c search_path=app --work-mem=4MB"),
        ]));
        let before = settings.fingerprint();
        settings.apply(SettingChange::Set {
            name: "timezone".into(),
            statement: "SET TIME ZONE 'UTC'".into(),
        });
        assert_ne!(settings.fingerprint(), before);
        assert_eq!(
            settings.sql(),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; SET \"application_name\" TO 'it''s'; \
             SET \"search_path\" TO 'app'; SET \"work_mem\" TO '4MB'; SET TIME ZONE 'UTC'"
        );
        settings.apply(SettingChange::ResetAll);
        assert_eq!(settings.fingerprint(), before);
        assert_eq!(settings.startup_value("Application_Name"), Some("it's"));
    }
}
