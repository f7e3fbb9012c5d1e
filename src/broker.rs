//! The core every front door calls: who is calling, which role it gets,
//! and that role's credentials. It holds the container index, the static
//! mappings, the credential cache, the IAM role lookup and the live alias
//! map, and knows no HTTP and no config file: a door turns its protocol
//! into these calls.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};

use crate::container::Container;
use crate::credentials::sts::StsError;
use crate::credentials::{CredentialCache, Held, RoleRequest};
use crate::platform::index::{ContainerIndex, IndexChange};
use crate::platform::mapping::StaticMappings;
use crate::roles::{
    assign, container_session, Assignment, RoleArn, RoleError, RoleLookup, RoleMap,
};

/// Everything a door asks of the core, shared by all doors and connections.
pub struct Broker {
    index: Arc<ContainerIndex>,
    credentials: Arc<CredentialCache>,
    /// The alias map in force; reload stores a new one.
    roles: Arc<ArcSwap<RoleMap>>,
    /// Resolves bare role names for unmapped environment roles.
    lookup: Arc<dyn RoleLookup>,
    /// `roleMappingFile`: addresses that are not Docker containers.
    mappings: Option<Arc<StaticMappings>>,
}

impl Broker {
    pub fn new(
        index: Arc<ContainerIndex>,
        credentials: Arc<CredentialCache>,
        roles: Arc<ArcSwap<RoleMap>>,
    ) -> Broker {
        Broker {
            index,
            credentials,
            roles,
            lookup: Arc::new(NoLookup),
            mappings: None,
        }
    }

    /// Also answers the addresses of a static mapping file.
    pub fn with_static_mappings(mut self, mappings: Arc<StaticMappings>) -> Broker {
        self.mappings = Some(mappings);
        self
    }

    /// Resolves bare role names (unmapped environment roles) with `lookup`.
    pub fn with_role_lookup(mut self, lookup: Arc<dyn RoleLookup>) -> Broker {
        self.lookup = lookup;
        self
    }

    /// The alias map in force. A request reads it once and passes it on,
    /// so that one answer comes from one map.
    pub fn roles(&self) -> Guard<Arc<RoleMap>> {
        self.roles.load()
    }

    /// The container index's generation (see
    /// [`ContainerIndex::generation`]): read it before
    /// [`holder_of`](Self::holder_of), and an equal value later means that
    /// lookup would still find the same container.
    pub fn index_generation(&self) -> u64 {
        self.index.generation()
    }

    /// The container that holds `caller`'s address now: Docker first, then
    /// the static mappings, and only then a miss that waits for Docker to
    /// catch up. A container whose process has exited is never the answer,
    /// even before Docker's event says so: its address may be a new
    /// container's already.
    pub async fn holder_of(&self, caller: IpAddr) -> Option<Arc<Container>> {
        let known = self
            .index
            .get(caller)
            .or_else(|| self.mappings.as_ref().and_then(|m| m.get(caller)));
        match known {
            Some(container) if container.has_exited() => {
                Box::pin(self.index.lookup_after_exit(caller, &container)).await
            }
            Some(container) => Some(container),
            None => Box::pin(self.index.lookup(caller)).await,
        }
    }

    /// The role `container` may assume under `roles`, and how.
    pub async fn assign(
        &self,
        roles: &RoleMap,
        container: &Container,
    ) -> Result<Assignment, RoleError> {
        assign(roles, container, &*self.lookup).await
    }

    /// The credentials of `assignment`, with a hold that tells later whether
    /// they are still the answer (see [`Held`]).
    pub async fn credentials(
        &self,
        assignment: &Assignment,
        now: SystemTime,
    ) -> Result<Held, StsError> {
        self.credentials
            .get_held(&role_request(assignment), now)
            .await
    }

    /// Fetches a container's credentials ahead of its first request, so that
    /// request is a cache hit. Errors are only logged: the request path will
    /// try again and answer for itself.
    pub async fn prefetch(&self, container: &Container) {
        let roles = self.roles.load_full();
        let Ok(assignment) = assign(&roles, container, &*self.lookup).await else {
            return;
        };
        let request = role_request(&assignment);
        match self.credentials.get(&request, SystemTime::now()).await {
            Ok(_) => log::debug!(
                "prefetched credentials of {} for container {}",
                request.role_arn,
                container.name
            ),
            Err(error) => log::warn!("prefetch for container {}: {error}", container.name),
        }
    }

    /// Forgets the credentials of a container that is gone.
    /// The session is derived as `assign` derives it, so a session named by
    /// `roleSessionKey` is forgotten too.
    pub fn forget(&self, container: &Container) {
        let roles = self.roles.load();
        self.credentials
            .forget_session(&container_session(&roles, container));
    }
}

/// At most this many prefetches run at once, so that a host starting many
/// containers (or the proxy starting on a busy host) does not flood STS.
const PREFETCH_CONCURRENCY: usize = 8;

/// Prefetches credentials for containers as they appear, and forgets those of
/// containers that are gone.
pub fn spawn_prefetcher(
    broker: Arc<Broker>,
    mut changes: tokio::sync::broadcast::Receiver<IndexChange>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY));
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(IndexChange::Up(container)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        broker.prefetch(&container).await;
                        drop(permit);
                    });
                }
                Ok(IndexChange::Gone(container)) => broker.forget(&container),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    log::warn!("prefetcher fell behind by {missed} container changes; they will be fetched on request")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

fn role_request(assignment: &Assignment) -> RoleRequest {
    RoleRequest {
        role_arn: assignment.role.arn.clone(),
        policy: assignment.policy.clone(),
        session_name: assignment.session_name.clone(),
        external_id: assignment.external_id.clone(),
        duration: assignment.role.duration,
    }
}

/// Used when no IAM lookup is wired: bare unmapped role names need an account.
struct NoLookup;

#[async_trait::async_trait]
impl RoleLookup for NoLookup {
    async fn role_arn(&self, name: &str) -> Result<RoleArn, String> {
        Err(format!(
            "no account for role \"{name}\": set defaultAccountId or write name@account"
        ))
    }
}
