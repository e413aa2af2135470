//! What others ask of the serving thread, which alone changes the running configuration:
//! signals, the pooler's console and the admin API send [`Control`] messages; the admin API
//! also reads the configuration in force through [`Operations`].

use std::sync::{Arc, mpsc};

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{ConfigError, Loaded};

/// Messages to the serving thread.
pub(crate) enum Control {
    /// Reload the config; answer on the channel when given (SIGHUP gives none and logs).
    Reload(Option<mpsc::Sender<Result<(), ConfigError>>>),
    /// Check a new build of a plugin and, when it loads, write it over the plugin's file and
    /// put it in use; answers with its SHA-256.
    UploadPlugin {
        name: String,
        wasm: Vec<u8>,
        reply: mpsc::Sender<Result<String, UploadError>>,
    },
    /// Stop accepting, drain, exit.
    Shutdown,
}

/// Why an uploaded plugin is not in use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// No plugin of that name is configured.
    #[error("no plugin named {0:?} is configured")]
    Unknown(String),
    /// It is built in: there is no file to replace.
    #[error("plugin {0:?} is built in ({1}); give it a file source to upload new builds")]
    BuiltIn(String, String),
    /// It does not load (not a component, the wrong world or kind, ...).
    #[error("{0}")]
    Invalid(String),
    /// It loads but cannot be written over the plugin's file.
    #[error("cannot write {0}: {1}")]
    Write(String, String),
    /// Gatehouse is stopping.
    #[error("gatehouse is stopping")]
    Stopping,
}

/// The serving thread's mailbox and the configuration in force, for the admin API.
pub(crate) struct Operations {
    control: UnboundedSender<Control>,
    config: ArcSwap<Loaded>,
}

impl Operations {
    pub(crate) fn new(control: UnboundedSender<Control>, config: Loaded) -> Self {
        Self {
            control,
            config: ArcSwap::from_pointee(config),
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Arc<Loaded> {
        self.config.load_full()
    }

    /// Records the configuration now in force (the serving thread, after a reload).
    pub(crate) fn set_config(&self, config: Loaded) {
        self.config.store(Arc::new(config));
    }

    /// Reloads the configuration and waits for the outcome. Blocks: call it off the runtime.
    pub(crate) fn reload(&self) -> Result<(), String> {
        let (reply, answer) = mpsc::channel();
        self.send(Control::Reload(Some(reply)))?;
        answer
            .recv()
            .map_err(|_| "gatehouse is stopping".to_string())?
            .map_err(|err| err.to_string())
    }

    /// Puts a new build of plugin `name` in use. Blocks: call it off the runtime.
    pub(crate) fn upload_plugin(&self, name: String, wasm: Vec<u8>) -> Result<String, UploadError> {
        let (reply, answer) = mpsc::channel();
        self.send(Control::UploadPlugin { name, wasm, reply })
            .map_err(|_| UploadError::Stopping)?;
        answer.recv().map_err(|_| UploadError::Stopping)?
    }

    fn send(&self, message: Control) -> Result<(), String> {
        self.control
            .send(message)
            .map_err(|_| "gatehouse is stopping".to_string())
    }
}
