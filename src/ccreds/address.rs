//! The container credentials protocol by address: what an SDK asks at
//! `http://169.254.170.2` + `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, sent
//! to the proxy by DNAT. No token: the caller is the container that holds
//! the source address, proven as on the IMDS door (its side of the
//! connection found in that container's network namespace), and gets the
//! role its label names, the default alias when it has none. Any path: the
//! operator chooses the relative URI, and the address alone says who asks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use super::{document, error_response, json, Refusal, ROUTE};
use crate::broker::{Broker, Caller};
use crate::container::Container;
use crate::server::{Answered, Peer, Request, Service};

/// The addresses an SDK dials for `RELATIVE_URI` (the ECS task metadata
/// address) and, in newer SDKs, for the EKS Pod Identity address over IPv6:
/// with DNAT inside a container's own namespace, the container's socket
/// still names these, so the proof looks for them too.
pub const CONTAINER_CREDENTIALS_ADDRESSES: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)), 80),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
        80,
    ),
];

/// The door by address: the core, and nothing of its own.
pub struct ByAddress {
    broker: Arc<Broker>,
}

/// A response and what its response line says.
pub struct Reply {
    pub response: Response<Full<Bytes>>,
    pub container: Option<Arc<Container>>,
    pub alias: Option<String>,
    /// Why the answer is not a 200; never holds a secret.
    pub reason: Option<String>,
}

impl ByAddress {
    pub fn new(broker: Arc<Broker>) -> ByAddress {
        ByAddress { broker }
    }

    /// Answers one request from `caller`.
    pub async fn respond(
        &self,
        caller: &Caller,
        request: &http::request::Parts,
        now: SystemTime,
    ) -> Reply {
        if request.method != Method::GET && request.method != Method::HEAD {
            return refused(Refusal::Method, None, None);
        }
        let container = match self.broker.identify(caller).await {
            Ok(Some(container)) => container,
            Ok(None) => return refused(Refusal::UnknownCaller, None, None),
            Err(refusal) => return refused(refusal.into(), None, None),
        };
        let roles = self.broker.roles();
        let assignment = match self.broker.assign(&roles, &container).await {
            Ok(assignment) => assignment,
            Err(error) => return refused(error.into(), Some(container), None),
        };
        let alias = Some(assignment.role.alias.clone());
        match self.broker.credentials(&assignment, now).await {
            Ok(held) => Reply {
                response: json(StatusCode::OK, document(&held.credentials, &assignment)),
                container: Some(container),
                alias,
                reason: None,
            },
            Err(error) => refused(error.into(), Some(container), alias),
        }
    }
}

fn refused(refusal: Refusal, container: Option<Arc<Container>>, alias: Option<String>) -> Reply {
    Reply {
        response: error_response(&refusal),
        container,
        alias,
        reason: Some(refusal.to_string()),
    }
}

/// Each connection keeps its caller, so the proof is made once for it.
impl Service for ByAddress {
    type Connection = Caller;

    fn connect(&self, peer: &Peer) -> Caller {
        let mut dialled: Vec<SocketAddr> = peer.original_dst.into_iter().collect();
        dialled.push(peer.local);
        dialled.extend(
            CONTAINER_CREDENTIALS_ADDRESSES
                .iter()
                .filter(|a| **a != peer.local && Some(**a) != peer.original_dst),
        );
        Caller::new(peer.addr, dialled)
    }

    async fn call(&self, caller: &Caller, request: Request<'_>) -> Response<Full<Bytes>> {
        let reply = self
            .respond(caller, &request.parts, SystemTime::now())
            .await;
        let mut response = reply.response;
        request.finish(
            &mut response,
            Answered {
                container: reply.container.as_ref().map_or("-", |c| c.name.as_str()),
                alias: reply.alias.as_deref().unwrap_or("-"),
                route: ROUTE,
                reason: reply.reason.as_deref(),
            },
        );
        response
    }
}
