//! The Docker Engine API through bollard: containers listed, inspected and
//! followed through the event stream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::process::{Opened, ProcessWatcher};
use super::{short, ContainerEvent, ContainerSource, EventStream, PlatformError};
use crate::container::{Container, Process};

/// For each call to the engine.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Docker Engine API through bollard.
pub struct DockerSource {
    docker: Mutex<bollard::Docker>,
    host: String,
    /// Environment variables to read from each container; when any, listing
    /// inspects every container (the list API does not return environments).
    env_keys: Vec<String>,
    processes: ProcessWatcher,
}

impl DockerSource {
    /// A client for `host` (`unix://...`, `tcp://...`); nothing is sent until
    /// [`ContainerSource::connect`].
    pub fn new(host: &str) -> Result<DockerSource, PlatformError> {
        let docker = bollard::Docker::connect_with_host(host)
            .map_err(|source| PlatformError::Connect {
                host: host.to_string(),
                source,
            })?
            .with_timeout(DOCKER_TIMEOUT);
        Ok(DockerSource {
            docker: Mutex::new(docker),
            host: host.to_string(),
            env_keys: Vec::new(),
            processes: ProcessWatcher::new(),
        })
    }

    /// Also read these variables from each container's environment.
    pub fn reading_env(mut self, keys: Vec<String>) -> DockerSource {
        self.env_keys = keys;
        self
    }

    fn client(&self) -> bollard::Docker {
        self.docker.lock().unwrap().clone()
    }

    fn api_error(&self, operation: &'static str, source: bollard::errors::Error) -> PlatformError {
        PlatformError::Api {
            host: self.host.clone(),
            operation,
            source,
        }
    }
}

fn addresses<'a>(
    networks: impl IntoIterator<Item = &'a bollard::models::EndpointSettings>,
) -> Vec<IpAddr> {
    sorted_addresses(
        networks
            .into_iter()
            .flat_map(|n| [n.ip_address.as_deref(), n.global_ipv6_address.as_deref()]),
    )
}

/// The addresses among an endpoint's texts, sorted and without duplicates;
/// absent, empty (no address yet) and unparsable ones left out.
pub(crate) fn sorted_addresses<'a>(
    texts: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = texts
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[async_trait]
impl ContainerSource for DockerSource {
    /// Agrees an API version with the engine, so older engines (API 1.41) work.
    async fn connect(&self) -> Result<(), PlatformError> {
        let negotiated =
            self.client()
                .negotiate_version()
                .await
                .map_err(|source| PlatformError::Connect {
                    host: self.host.clone(),
                    source,
                })?;
        *self.docker.lock().unwrap() = negotiated;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Container>, PlatformError> {
        let version = self.client().client_version().to_string();
        let listed = super::list::list(&self.host, &version, DOCKER_TIMEOUT)
            .await
            .map_err(|message| PlatformError::Http {
                host: self.host.clone(),
                operation: "listing containers",
                message,
            })?;
        if !self.env_keys.is_empty() {
            // Environments come only from inspect: at most 16 at a time.
            let ids: Vec<String> = listed.into_iter().map(|l| l.id).collect();
            let inspected: Vec<_> = futures_util::stream::iter(ids)
                .map(|id| async move { self.inspect(&id).await })
                .buffer_unordered(16)
                .collect()
                .await;
            let mut containers = Vec::with_capacity(inspected.len());
            for container in inspected {
                containers.extend(container?);
            }
            return Ok(containers);
        }
        Ok(listed
            .into_iter()
            .map(super::list::Listed::into_container)
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<Container>, PlatformError> {
        let details = match self.client().inspect_container(id, None).await {
            Ok(details) => details,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.api_error("inspecting a container", e)),
        };
        let running = details
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running {
            return Ok(None);
        }
        let id = details.id.unwrap_or_else(|| id.to_string());
        let pid = details.state.as_ref().and_then(|s| s.pid).unwrap_or(0);
        let process = match self.processes.open(pid, &id) {
            Opened::Running(watch) => Process::Watched(Arc::new(watch)),
            Opened::Exited => {
                log::debug!(
                    "container {}'s process has exited; Docker still says it runs",
                    short(&id)
                );
                return Ok(None);
            }
            Opened::Unverifiable(why) => {
                log::debug!("container {}'s process is not watched: {why}", short(&id));
                Process::Unwatched
            }
        };
        let ips = details
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| addresses(n.values()))
            .unwrap_or_default();
        let (labels, env, image) = details
            .config
            .map(|c| {
                (
                    c.labels.unwrap_or_default(),
                    c.env.unwrap_or_default(),
                    c.image.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let labels = labels.into_iter().collect();
        let env = env
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .filter(|(key, _)| self.env_keys.iter().any(|k| k == key))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Ok(Some(
            Container::new(id, details.name.as_deref().unwrap_or_default(), labels, ips)
                .with_env(env)
                .with_image(image)
                .with_process(process),
        ))
    }

    /// The list API gives no pids (nor environments, which are then inspected anyway).
    fn list_is_complete(&self) -> bool {
        !self.env_keys.is_empty()
    }

    fn events(&self) -> EventStream {
        use bollard::models::EventMessageTypeEnum as Type;
        let filters = HashMap::from([
            ("type", vec!["container", "network"]),
            (
                "event",
                vec!["create", "start", "die", "destroy", "connect", "disconnect"],
            ),
        ]);
        let options = bollard::query_parameters::EventsOptionsBuilder::new()
            .filters(&filters)
            .build();
        let host = self.host.clone();
        let stream = self
            .client()
            .events(Some(options))
            .filter_map(move |message| {
                let event = match message {
                    Err(source) => Some(Err(PlatformError::Api {
                        host: host.clone(),
                        operation: "reading events",
                        source,
                    })),
                    Ok(message) => {
                        let actor = message.actor.unwrap_or_default();
                        match (message.typ, message.action.as_deref()) {
                            (Some(Type::CONTAINER), Some("create")) => {
                                actor.id.map(|id| Ok(ContainerEvent::Created(id)))
                            }
                            (Some(Type::CONTAINER), Some("start")) => {
                                actor.id.map(|id| Ok(ContainerEvent::Changed(id)))
                            }
                            (Some(Type::CONTAINER), Some("die" | "destroy")) => {
                                actor.id.map(|id| Ok(ContainerEvent::Gone(id)))
                            }
                            (Some(Type::NETWORK), Some("connect" | "disconnect")) => actor
                                .attributes
                                .and_then(|mut a| a.remove("container"))
                                .map(|id| Ok(ContainerEvent::Changed(id))),
                            _ => None,
                        }
                    }
                };
                std::future::ready(event)
            });
        Box::pin(stream)
    }

    fn describe(&self) -> String {
        format!("Docker at {}", self.host)
    }
}
