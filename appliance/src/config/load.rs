//! Layering (defaults, TOML file, environment) and turning every failure into a message that says
//! where the offending value was written.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map};
use figment::{Metadata, Profile, Source};

use super::Config;
use super::env::{self, Environment};
use super::locate::{line_at, line_of};
use super::validate::Problem;

/// A config that parsed and passed validation, with what is needed to explain later problems
/// (provisioning checks, reloads) in terms of the file and variables it came from.
#[derive(Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    sources: Sources,
}

/// What a config was built from, kept for error messages and reloads.
#[derive(Clone)]
struct Sources {
    file: Option<(PathBuf, String)>,
    environment: Environment,
    figment: Figment,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: invalid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What the parser expected.
        message: String,
    },
    /// Values that are present but wrong, one line each.
    #[error("{}", display_lines(.0))]
    Invalid(Vec<Located>),
}

/// One invalid value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where the value came from.
    pub origin: Origin,
    /// Dotted key, e.g. `upstreams.app.retries`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file, and the line when the key is written in it.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: Option<usize>,
    },
    /// An environment variable.
    Env {
        /// The variable's name.
        variable: String,
    },
    /// Nobody set it: a built-in default (or a missing required key with no file).
    Default,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}", path.display())?,
            Origin::File { path, line: None } => write!(f, "{}", path.display())?,
            Origin::Env { variable } => write!(f, "environment variable {variable}")?,
            Origin::Default => f.write_str("built-in default")?,
        }
        write!(f, ": {}: {}", self.key, self.message)
    }
}

fn display_lines(problems: &[Located]) -> String {
    problems
        .iter()
        .map(Located::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads `file` (optional: without one, the embedded defaults) and the process environment.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_from(file, std::env::vars())
}

/// Loads `file` and the given environment variables: defaults, then the file, then the
/// reference deployments' variable names, then `GATEHOUSE_SECTION__KEY`.
pub fn load_from(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let file = file.map(read_toml).transpose()?;
    let environment = Environment::new(vars);
    Loaded::build(file, environment)
}

/// Reads `path` and checks it is TOML, so syntax errors get the file's name and line.
fn read_toml(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Err(err) = toml_edit::Document::parse(text.as_str()) {
        let line = err.span().map_or(1, |span| line_at(&text, span.start));
        let message = err.message().trim_end().to_string();
        return Err(ConfigError::Syntax {
            path: path.to_owned(),
            line,
            message,
        });
    }
    Ok((path.to_owned(), text))
}

impl Loaded {
    fn build(
        file: Option<(PathBuf, String)>,
        environment: Environment,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some((path, text)) = &file {
            figment = figment.merge(FileProvider { path, text });
        }
        figment = figment.merge(environment.clone());
        let sources = Sources {
            file,
            environment,
            figment,
        };
        let config: Config = sources
            .figment
            .extract()
            .map_err(|err| sources.explain(err))?;
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(sources.locate_all(&problems)));
        }
        Ok(Self { config, sources })
    }

    /// Loads again from the same file and variables (for SIGHUP): the file is re-read.
    pub fn reload(&self) -> Result<Self, ConfigError> {
        let file = self
            .sources
            .file
            .as_ref()
            .map(|(path, _)| read_toml(path))
            .transpose()?;
        Self::build(file, self.sources.environment.clone())
    }

    /// Where the value at `path` came from: `FILE:LINE`, `env VARIABLE` or `default`. An
    /// element of an array of tables comes whole from one layer, so its keys take the
    /// element's source.
    pub(super) fn origin_of(&self, path: &[String]) -> String {
        let figment = &self.sources.figment;
        let element = path
            .iter()
            .rposition(|segment| segment.parse::<usize>().is_ok())
            .map(|at| &path[..=at]);
        let metadata = figment
            .find_metadata(&path.join("."))
            .or_else(|| element.and_then(|element| figment.find_metadata(&element.join("."))));
        let Some(metadata) = metadata else {
            return "default".to_string();
        };
        match self
            .sources
            .locate(path, Some(metadata), String::new())
            .origin
        {
            Origin::File {
                path,
                line: Some(line),
            } => format!("{}:{line}", path.display()),
            Origin::File { path, line: None } => path.display().to_string(),
            Origin::Env { variable } => format!("env {variable}"),
            Origin::Default => "default".to_string(),
        }
    }

    /// Turns problems found after loading (e.g. a certificate that does not parse) into an error
    /// that names where each key was set.
    pub fn error(&self, problems: &[Problem]) -> ConfigError {
        ConfigError::Invalid(self.sources.locate_all(problems))
    }
}

/// The file layer: the TOML text already read (and syntax-checked), with metadata that names the
/// file it came from.
struct FileProvider<'a> {
    path: &'a Path,
    text: &'a str,
}

impl figment::Provider for FileProvider<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::from("config file", Source::File(self.path.to_owned()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(self.text).data()
    }
}

impl Sources {
    /// Explains every deserialization error figment found.
    fn explain(&self, err: figment::Error) -> ConfigError {
        let located = err
            .into_iter()
            .map(|e| {
                let mut path = e.path.clone();
                let message = match &e.kind {
                    Kind::UnknownField(field, expected) => {
                        if path.last() != Some(field) {
                            path.push(field.clone());
                        }
                        format!("unknown key; expected one of: {}", expected.join(", "))
                    }
                    Kind::MissingField(field) => {
                        if path.last().map(String::as_str) != Some(field.as_ref()) {
                            path.push(field.to_string());
                        }
                        "required key is missing".to_string()
                    }
                    kind => kind.to_string(),
                };
                self.locate(&path, e.metadata.as_ref(), message)
            })
            .collect();
        ConfigError::Invalid(located)
    }

    fn locate_all(&self, problems: &[Problem]) -> Vec<Located> {
        problems
            .iter()
            .map(|p| {
                let key = p.key.join(".");
                self.locate(&p.key, self.figment.find_metadata(&key), p.message.clone())
            })
            .collect()
    }

    /// Names where `path` was set: the env variable if the environment layer provided it,
    /// otherwise the file's line if it is written there.
    fn locate(&self, path: &[String], metadata: Option<&Metadata>, message: String) -> Located {
        let key = path.join(".");
        let from_env = metadata.is_some_and(|m| m.name == env::NAME);
        let origin = match (&self.file, self.environment.variable_for(&key)) {
            (_, Some(variable)) if from_env || metadata.is_none() => Origin::Env {
                variable: variable.to_string(),
            },
            (Some((file, text)), _) => Origin::File {
                path: file.clone(),
                line: line_of(text, path),
            },
            (None, Some(variable)) => Origin::Env {
                variable: variable.to_string(),
            },
            (None, None) => Origin::Default,
        };
        Located {
            origin,
            key,
            message,
        }
    }
}
