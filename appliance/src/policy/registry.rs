//! The plugins of one config, by name. On reload a plugin whose settings and wasm are unchanged
//! is kept as it is (warm instances and all); one with new code or settings gets a new version
//! swapped into the same slot, so routes keep pointing at it and the old version stays for
//! rollback. Loading happens first and may fail; swapping happens only once everything loaded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tracing::info;

use super::builtin;
use super::engine::{PluginSpec, PolicyEngine};
use super::plugin::{Plugin, PluginVersion};
use super::settings::Limits;
use crate::config::{PluginConfig, Problem};
use crate::file_stamp::FileStamp;

/// Loaded plugins by name.
#[derive(Default)]
pub struct Plugins {
    by_name: BTreeMap<String, Entry>,
}

struct Entry {
    plugin: Arc<Plugin>,
    config: PluginConfig,
    wasm_sha256: [u8; 32],
}

/// Plugins loaded for a new config, not yet in use.
pub struct Prepared {
    entries: BTreeMap<String, (Entry, Option<Arc<PluginVersion>>)>,
}

impl Plugins {
    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.by_name.get(name).map(|entry| &entry.plugin)
    }

    /// Every plugin, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Plugin>)> {
        self.by_name
            .iter()
            .map(|(name, entry)| (name.as_str(), &entry.plugin))
    }

    /// Loads what `configs` needs that `self` does not already run. Problems name the config
    /// key (`plugins.NAME.source`) so they can be located in the file.
    pub fn prepare(
        &self,
        engine: &PolicyEngine,
        configs: &BTreeMap<String, PluginConfig>,
    ) -> Result<Prepared, Vec<Problem>> {
        self.prepare_with(engine, configs, None)
    }

    /// As [`Plugins::prepare`], with the bytes of `replacing` (a plugin's name and a new build)
    /// in place of what its source holds.
    pub fn prepare_with(
        &self,
        engine: &PolicyEngine,
        configs: &BTreeMap<String, PluginConfig>,
        replacing: Option<(&str, &[u8])>,
    ) -> Result<Prepared, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut entries = BTreeMap::new();
        for (name, config) in configs {
            let key = format!("plugins.{name}.source");
            let wasm = match replacing {
                Some((replaced, wasm)) if replaced == name => Ok(wasm.to_vec()),
                _ => read_source(&config.source),
            };
            let wasm = match wasm {
                Ok(wasm) => wasm,
                Err(why) => {
                    problems.push(Problem::new(&key, why));
                    continue;
                }
            };
            let wasm_sha256: [u8; 32] = Sha256::digest(&wasm).into();
            if let Some(entry) = self.by_name.get(name)
                && entry.config == *config
                && entry.wasm_sha256 == wasm_sha256
            {
                let unchanged = Entry {
                    plugin: Arc::clone(&entry.plugin),
                    config: config.clone(),
                    wasm_sha256,
                };
                entries.insert(name.clone(), (unchanged, None));
                continue;
            }
            match engine.load(spec(name, config), &wasm) {
                Ok(version) => {
                    // Same kind: the same slot gets the new version; otherwise a new slot.
                    let (plugin, swap) = match self.by_name.get(name) {
                        Some(old) if old.config.kind == config.kind => {
                            (Arc::clone(&old.plugin), Some(version))
                        }
                        _ => (Arc::new(Plugin::new(version, config.fallback)), None),
                    };
                    let entry = Entry {
                        plugin,
                        config: config.clone(),
                        wasm_sha256,
                    };
                    entries.insert(name.clone(), (entry, swap));
                }
                Err(err) => problems.push(Problem::new(&key, format!("plugin {name} {err}"))),
            }
        }
        if problems.is_empty() {
            Ok(Prepared { entries })
        } else {
            Err(problems)
        }
    }
}

impl Prepared {
    /// Puts the prepared plugins in use.
    pub fn commit(self) -> Plugins {
        let by_name = self
            .entries
            .into_iter()
            .map(|(name, (entry, swap))| {
                if let Some(version) = swap {
                    info!(plugin = %name, sha256 = %version.sha256, "new plugin version in use");
                    entry.plugin.swap(version);
                }
                (name, entry)
            })
            .collect();
        Plugins { by_name }
    }
}

/// The stamps of the plugins' files (built-ins have none), to notice a new build of a plugin
/// without a config reload.
pub fn source_stamps(
    configs: &BTreeMap<String, PluginConfig>,
) -> BTreeMap<String, Option<FileStamp>> {
    configs
        .iter()
        .filter(|(_, config)| !config.source.starts_with("builtin:"))
        .map(|(name, config)| (name.clone(), FileStamp::of(Path::new(&config.source))))
        .collect()
}

/// The component bytes of `source`: a built-in, or a file.
fn read_source(source: &str) -> Result<Vec<u8>, String> {
    if let Some(name) = source.strip_prefix("builtin:") {
        return builtin::find(name)
            .map(|b| b.wasm.to_vec())
            .ok_or_else(|| format!("no built-in plugin {name:?}"));
    }
    std::fs::read(source).map_err(|err| format!("cannot read {source}: {err}"))
}

fn spec(name: &str, config: &PluginConfig) -> PluginSpec {
    PluginSpec {
        name: name.to_string(),
        kind: config.kind,
        config: config.config.to_string(),
        grants: config.grants.clone(),
        limits: Limits {
            deadline: config.deadline,
            memory_bytes: config.memory.as_u64() as usize,
            kv_bytes: config.kv_quota.as_u64() as usize,
        },
    }
}
