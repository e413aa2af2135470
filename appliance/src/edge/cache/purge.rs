//! What an operator can purge by: the readable keys, their prefixes, the plugin's tags, or a
//! whole host.

use serde::{Deserialize, Serialize};

/// Which entries a purge drops.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Purge {
    /// The entry with exactly this key (`GET shop.test/products?page=2`).
    Key(String),
    /// Every entry whose key starts with this.
    Prefix(String),
    /// Every entry the cache-rules plugin tagged so.
    Tag(String),
    /// Every entry of requests to this host (case-insensitive).
    Host(String),
}

/// What a purge did.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// Entries dropped, counting each key once over all tiers.
    pub purged: usize,
    /// The shared tier's outcome (`ok` or why it failed); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

impl Purge {
    /// Whether an entry with this key, host and tags goes.
    pub(crate) fn matches(&self, key: &str, host: &str, tags: &[String]) -> bool {
        match self {
            Self::Key(wanted) => key == wanted,
            Self::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Self::Tag(tag) => tags.iter().any(|t| t == tag),
            Self::Host(wanted) => host.eq_ignore_ascii_case(wanted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_matches_its_own_field() {
        let tags = ["products".to_string()];
        let entry = |purge: Purge| purge.matches("GET shop.test/p?a=1", "Shop.Test", &tags);
        assert!(entry(Purge::Key("GET shop.test/p?a=1".into())));
        assert!(!entry(Purge::Key("GET shop.test/p".into())));
        assert!(entry(Purge::Prefix("GET shop.test/".into())));
        assert!(!entry(Purge::Prefix("GET other.test/".into())));
        assert!(entry(Purge::Tag("products".into())));
        assert!(!entry(Purge::Tag("product".into())));
        assert!(entry(Purge::Host("shop.test".into())));
        assert!(!entry(Purge::Host("shop".into())));
        let body: Purge = serde_json::from_str(r#"{"prefix": "GET shop.test/"}"#).unwrap();
        assert_eq!(body, Purge::Prefix("GET shop.test/".into()));
        assert!(serde_json::from_str::<Purge>(r#"{"key": "a", "tag": "b"}"#).is_err());
    }
}
