//! The core every front door calls: who is calling, which role it gets,
//! and that role's credentials. It holds the container index, the static
//! mappings, the credential cache, the IAM role lookup and the live alias
//! map, and knows no HTTP and no config file: a door turns its protocol
//! into these calls.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};

use crate::container::{Container, Process};
use crate::credentials::sts::StsError;
use crate::credentials::{CredentialCache, Held, RoleRequest};
use crate::platform::index::{ContainerIndex, IndexChange};
use crate::platform::mapping::StaticMappings;
use crate::roles::{assign, grant_assignment, Assignment, RoleArn, RoleError, RoleLookup, RoleMap};
use crate::sys::process::Connection;

/// One connection's caller, as the core knows it: the address it comes
/// from, the addresses it may have dialled to reach the proxy, and what the
/// proof of its container found, kept for the connection's life so that
/// only its first request pays for it.
pub struct Caller {
    pub ip: IpAddr,
    /// The caller's end of the connection.
    peer: SocketAddr,
    /// Where the caller may have sent its SYN: the proxy's own address, the
    /// destination before NAT, and the door's well-known addresses.
    dialled: Vec<SocketAddr>,
    /// The container last proven (or refused) for this connection.
    proof: Mutex<Option<(Arc<Container>, Proof)>>,
}

/// What the proof found for one connection and one container.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Proof {
    /// The connection is in the container's network namespace.
    Proven,
    /// The proof cannot be made; served by address, as configured.
    ByAddress,
    Refused(Refusal),
}

/// Why a caller is not served as the container that holds its address.
/// Each is answered as an unknown caller is (404): the caller learns nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its side of the connection is not in the container's network
    /// namespace: another container may be wearing the address.
    #[error("caller not proven: the connection is not in container {0}'s network namespace")]
    NotProven(String),
    /// The proof cannot be made here and `requireCallerProof` is on.
    #[error("caller not proven: {0} (requireCallerProof is on)")]
    Unprovable(String),
}

impl Caller {
    /// The caller at `peer`, which reached the proxy at one of `dialled`.
    pub fn new(peer: SocketAddr, dialled: Vec<SocketAddr>) -> Caller {
        Caller {
            ip: peer.ip().to_canonical(),
            peer,
            dialled,
            proof: Mutex::new(None),
        }
    }

    /// A caller known only by its address, whose connection cannot be
    /// proven: for tests and callers without a connection of their own.
    pub fn address(ip: IpAddr) -> Caller {
        Caller::new(SocketAddr::new(ip, 0), Vec::new())
    }

    /// What was found earlier for `container`, if this connection was
    /// proven for that same container.
    fn proof_for(&self, container: &Arc<Container>) -> Option<Proof> {
        let proof = self.proof.lock().unwrap_or_else(PoisonError::into_inner);
        match &*proof {
            Some((proven, found)) if Arc::ptr_eq(proven, container) => Some(found.clone()),
            _ => None,
        }
    }

    fn keep_proof(&self, container: &Arc<Container>, found: Proof) {
        *self.proof.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((container.clone(), found));
    }
}

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
    /// Refuse containers whose connections cannot be proven
    /// (`requireCallerProof`); off, they are served by address alone.
    require_proof: bool,
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
            require_proof: false,
        }
    }

    /// Refuses callers whose connection cannot be proven to be their
    /// container's, instead of serving them by address alone.
    pub fn requiring_proof(mut self, require: bool) -> Broker {
        self.require_proof = require;
        self
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

    /// The container `caller` is, proven: [`holder_of`](Self::holder_of)
    /// its address, and its side of the connection found in that
    /// container's network namespace. Where the proof cannot be made, the
    /// caller is refused or served by address, as configured. Static
    /// mappings are addresses by definition and are served as such. The
    /// first request of a connection pays for the proof (one netlink round
    /// trip); the connection keeps what was found.
    pub async fn identify(&self, caller: &Caller) -> Result<Option<Arc<Container>>, Refusal> {
        let Some(mut container) = self.holder_of(caller.ip).await else {
            return Ok(None);
        };
        if container.is_stand_in() {
            return Ok(Some(container));
        }
        let found = match caller.proof_for(&container) {
            Some(found) => found,
            None => {
                if container.process == Process::NotInspected {
                    // Listed, not yet inspected: its process is moments away.
                    match Box::pin(self.index.inspected(caller.ip)).await {
                        Some(inspected) => container = inspected,
                        None => return Ok(None),
                    }
                }
                let found = self.prove(caller, &container);
                caller.keep_proof(&container, found.clone());
                found
            }
        };
        match found {
            Proof::Proven | Proof::ByAddress => Ok(Some(container)),
            Proof::Refused(refusal) => Err(refusal),
        }
    }

    fn prove(&self, caller: &Caller, container: &Container) -> Proof {
        match container.connection(caller.peer, &caller.dialled) {
            Connection::Found => Proof::Proven,
            Connection::NotFound => {
                log::warn!(
                    "connection from {} refused: not found in container {} ({})'s network \
                     namespace; another container may be wearing its address",
                    caller.peer,
                    container.name,
                    container.short_id()
                );
                Proof::Refused(Refusal::NotProven(container.name.clone()))
            }
            Connection::Unknown(_) if !self.require_proof => Proof::ByAddress,
            Connection::Unknown(why) => Proof::Refused(Refusal::Unprovable(why)),
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

    /// The role a grant of the container credentials door gets under
    /// `roles`: its alias's, with the grant's session name.
    pub fn assign_grant(
        &self,
        roles: &RoleMap,
        grant: &str,
        alias: &str,
    ) -> Result<Assignment, RoleError> {
        grant_assignment(roles, grant, alias)
    }

    /// The credentials of `assignment`, with a hold that tells later whether
    /// they are still the answer (see [`Held`]).
    pub async fn credentials(
        &self,
        assignment: &Assignment,
        now: SystemTime,
    ) -> Result<Held, StsError> {
        let request = role_request(assignment);
        let result = self.credentials.get_held(&request, now).await;
        if !request.tags.is_empty() || request.source_identity.is_some() {
            self.credentials.note_tagging(
                &assignment.role.alias,
                &request,
                result.as_ref().map(|_| ()),
            );
        }
        result
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
        let result = self.credentials.get(&request, SystemTime::now()).await;
        if !request.tags.is_empty() || request.source_identity.is_some() {
            self.credentials.note_tagging(
                &assignment.role.alias,
                &request,
                result.as_ref().map(|_| ()),
            );
        }
        match result {
            Ok(_) => log::debug!(
                "prefetched credentials of {} for container {}",
                request.role_arn,
                container.name
            ),
            Err(error) => log::warn!("prefetch for container {}: {error}", container.name),
        }
    }

    /// Forgets the credentials of a container that is gone. Its session
    /// is derived by `assign` itself, so a session named by
    /// `roleSessionKey` or a `roleSessionName` template, and one with tags,
    /// is forgotten too. A container that gets no role had no session.
    pub async fn forget(&self, container: &Container) {
        let roles = self.roles.load_full();
        if let Ok(assignment) = assign(&roles, container, &*self.lookup).await {
            self.credentials.forget_session(&assignment.session_name);
        }
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
                Ok(IndexChange::Gone(container)) => broker.forget(&container).await,
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
        tags: assignment.tags.clone(),
        transitive_tag_keys: assignment.transitive_tag_keys.clone(),
        source_identity: assignment.source_identity.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use crate::credentials::sts::{AssumeRole, Credentials};
    use crate::credentials::Timing;
    use crate::sys::ProcessWatch;

    /// Identifying a caller never calls STS.
    struct NoSts;

    #[async_trait::async_trait]
    impl AssumeRole for NoSts {
        async fn assume_role(
            &self,
            request: &RoleRequest,
            _duration: Duration,
        ) -> Result<Credentials, StsError> {
            panic!("STS called for {}", request.role_arn)
        }
    }

    fn broker(container: Container, require_proof: bool) -> Broker {
        let roles = RoleMap {
            aliases: Default::default(),
            default_alias: "default".into(),
            default_policy: None,
            role_env: None,
            allow_unmapped: false,
            account_map: Default::default(),
            default_account: None,
            session_key: None,
            tagging: Default::default(),
            host: Default::default(),
        };
        Broker::new(
            ContainerIndex::fixed(vec![container]),
            Arc::new(CredentialCache::new(
                Arc::new(NoSts),
                Timing::for_duration(Duration::from_secs(3600)),
            )),
            Arc::new(ArcSwap::from_pointee(roles)),
        )
        .requiring_proof(require_proof)
    }

    /// This test process stands in for a container's init process: its
    /// network namespace holds the client side of `connected()`.
    fn this_process_as_a_container(ip: &str) -> Container {
        let watch = ProcessWatch::unchecked(std::process::id() as i32)
            .unwrap()
            .with_socket_table();
        Container::new(
            "0123456789abcdef".into(),
            "/web",
            Default::default(),
            vec![ip.parse().unwrap()],
        )
        .with_process(Process::Watched(Arc::new(watch)))
    }

    /// A loopback connection, and the caller its server side sees.
    fn connected() -> (Caller, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let caller = Caller::new(
            client.local_addr().unwrap(),
            vec![listener.local_addr().unwrap()],
        );
        (caller, client, server)
    }

    /// Entering a network namespace needs CAP_SYS_ADMIN, as CI (root) has.
    fn can_prove() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[tokio::test]
    async fn a_connection_found_in_the_containers_namespace_is_served_as_the_container() {
        let broker = broker(this_process_as_a_container("127.0.0.1"), true);
        let (caller, _client, _server) = connected();
        let identified = broker.identify(&caller).await;
        if can_prove() {
            assert_eq!(identified.unwrap().unwrap().name, "web");
        } else {
            assert!(
                matches!(identified, Err(Refusal::Unprovable(why)) if why.contains("cannot enter the network namespace"))
            );
        }
    }

    #[tokio::test]
    async fn a_connection_not_in_the_containers_namespace_is_refused_whatever_the_setting() {
        // What a neighbour wearing the address looks like: the address is
        // the container's, but no socket of the container has this port.
        let (real, _client, _server) = connected();
        let worn = SocketAddr::new(real.ip, real.peer.port().wrapping_add(1).max(1));
        for require in [true, false] {
            let broker = broker(this_process_as_a_container("127.0.0.1"), require);
            let caller = Caller::new(worn, real.dialled.clone());
            let identified = broker.identify(&caller).await;
            if can_prove() {
                assert_eq!(identified.unwrap_err(), Refusal::NotProven("web".into()));
            } else {
                assert_eq!(identified.is_err(), require);
            }
        }
    }

    #[tokio::test]
    async fn a_connection_keeps_its_proof_for_its_life() {
        let broker = broker(this_process_as_a_container("127.0.0.1"), true);
        let (caller, client, server) = connected();
        let first = broker.identify(&caller).await;
        // Asked again, the namespace would no longer have the connection:
        // the second answer comes from what the first request found.
        drop((client, server));
        let second = broker.identify(&caller).await;
        assert_eq!(first.map(|c| c.is_some()), second.map(|c| c.is_some()));
        if can_prove() {
            let fresh = Caller::new(caller.peer, caller.dialled.clone());
            assert!(matches!(
                broker.identify(&fresh).await,
                Err(Refusal::NotProven(_))
            ));
        }
    }

    #[tokio::test]
    async fn where_no_proof_can_be_made_the_setting_decides() {
        let unwatched = || {
            Container::new(
                "0123456789abcdef".into(),
                "/web",
                Default::default(),
                vec!["127.0.0.1".parse().unwrap()],
            )
            .with_process(Process::Unwatched)
        };
        let caller = Caller::address("127.0.0.1".parse().unwrap());
        let served = broker(unwatched(), false).identify(&caller).await;
        assert_eq!(served.unwrap().unwrap().name, "web");
        let caller = Caller::address("127.0.0.1".parse().unwrap());
        let refused = broker(unwatched(), true).identify(&caller).await;
        assert!(
            matches!(&refused, Err(Refusal::Unprovable(why)) if why.contains("cannot be checked")),
            "{refused:?}"
        );
        assert!(refused
            .unwrap_err()
            .to_string()
            .ends_with("(requireCallerProof is on)"));
    }

    #[tokio::test]
    async fn a_static_mapping_is_an_address_by_definition() {
        let stand_in = Container::new(
            String::new(),
            "ip-127-0-0-1",
            Default::default(),
            vec!["127.0.0.1".parse().unwrap()],
        );
        let caller = Caller::address("127.0.0.1".parse().unwrap());
        let served = broker(stand_in, true).identify(&caller).await;
        assert!(served.unwrap().unwrap().is_stand_in());
    }
}
