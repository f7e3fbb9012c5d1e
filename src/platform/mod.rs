//! Where callers come from: the platforms that run containers, the index
//! of their addresses, the static mapping file, and whether a container's
//! process still runs. The platform knows no role, never calls STS and
//! speaks no protocol to containers.

pub mod docker;
pub mod index;
mod list;
pub mod mapping;
pub mod process;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use crate::container::Container;

/// A change reported by the platform's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEvent {
    /// Started, or connected to or disconnected from a network: look again.
    Changed(String),
    /// Died or destroyed: its addresses are no longer its own.
    Gone(String),
    /// Created, not yet started: it will take an address in a moment, so an
    /// address nobody holds now may be its own soon.
    Created(String),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, PlatformError>> + Send>>;

/// Where containers come from. Docker in production; tests stand in their own.
#[async_trait]
pub trait ContainerSource: Send + Sync + 'static {
    /// Establishes or re-establishes the connection; called before each resync.
    async fn connect(&self) -> Result<(), PlatformError> {
        Ok(())
    }
    /// Every running container.
    async fn list(&self) -> Result<Vec<Container>, PlatformError>;
    /// One container, or `None` when it is gone or not running.
    async fn inspect(&self, id: &str) -> Result<Option<Container>, PlatformError>;
    /// Whether `list` tells as much as `inspect`. When not, the watcher
    /// inspects newly listed containers in the background to learn their
    /// processes.
    fn list_is_complete(&self) -> bool {
        true
    }
    /// Changes from now on; subscribed before the list it complements.
    fn events(&self) -> EventStream;
    /// Where the source is, for log lines.
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot connect to Docker at {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker at {host}: {operation} failed: {source}")]
    Api {
        host: String,
        operation: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    /// A call made without bollard (see `docker_list`).
    #[error("Docker at {host}: {operation} failed: {message}")]
    Http {
        host: String,
        operation: &'static str,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// The ID as `docker ps` shows it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
