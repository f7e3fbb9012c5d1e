//! The container credentials protocol, by token: what the SDKs' container
//! credentials provider asks at `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with
//! the grant's token in `Authorization` (from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `..._TOKEN`).
//!
//! A second front door on the same core as [`crate::imds`], and no part
//! of it: the token names a grant, the grant an alias, and the broker that
//! alias's role and credentials. A request without a valid token never
//! gets a role, the default one included. Answers are shaped like the ECS
//! agent's and the EKS Pod Identity agent's (`AccessKeyId`,
//! `SecretAccessKey`, `Token`, `Expiration`, `RoleArn`, `AccountId`),
//! errors are JSON bodies, and the response line names the grant or the
//! reason, never the token.

pub mod address;
pub mod grants;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::broker::Broker;
use crate::credentials::sts::{Credentials, StsError};
use crate::roles::{Assignment, RoleError};
use crate::server::{Answered, Peer, Request, Service};
use crate::time::timestamp;
use grants::{Grant, Grants, Verdict};

/// The route name in metrics.
const ROUTE: &str = "container-credentials";

/// Why a request gets no credentials, in the words its response line
/// gives; [`Refusal::status`] maps each to its status in one match.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no Authorization header")]
    MissingToken,
    #[error("Authorization is not a grant token")]
    MalformedToken,
    #[error("Authorization is no grant's current token")]
    UnknownToken,
    #[error("method not allowed here")]
    Method,
    /// By address: no container (or static mapping) holds the caller's address.
    #[error("no container holds the caller's address")]
    UnknownCaller,
    #[error(transparent)]
    Caller(#[from] crate::broker::Refusal),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error(transparent)]
    Sts(#[from] StsError),
}

impl Refusal {
    /// 401 asks for a token; 403 refuses the one given; a grant whose
    /// alias is gone is the operator's error (500); STS failing is 503.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::MissingToken | Refusal::MalformedToken => StatusCode::UNAUTHORIZED,
            Refusal::UnknownToken => StatusCode::FORBIDDEN,
            Refusal::Method => StatusCode::METHOD_NOT_ALLOWED,
            // An unknown or unproven caller, or a label naming no alias, is
            // "no credentials here", as on the IMDS door.
            Refusal::UnknownCaller | Refusal::Caller(_) => StatusCode::NOT_FOUND,
            Refusal::Role(RoleError::UnknownGrantAlias(..)) => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::Role(_) => StatusCode::NOT_FOUND,
            Refusal::Sts(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The fixed code of the JSON error body; the detail goes to the log.
    fn code(&self) -> &'static str {
        match self {
            Refusal::MissingToken | Refusal::MalformedToken => "Unauthorized",
            Refusal::UnknownToken => "AccessDenied",
            Refusal::Method => "MethodNotAllowed",
            Refusal::UnknownCaller | Refusal::Caller(_) => "NotFound",
            Refusal::Role(RoleError::UnknownGrantAlias(..)) => "InternalError",
            Refusal::Role(_) => "NotFound",
            Refusal::Sts(_) => "ServiceUnavailable",
        }
    }
}

/// The door: the grants' tokens and the core.
pub struct ContainerCredentials {
    broker: Arc<Broker>,
    grants: Arc<Grants>,
}

/// A response and what its response line says.
pub struct Reply {
    pub response: Response<Full<Bytes>>,
    /// The grant the token named, if it named one.
    pub grant: Option<Arc<Grant>>,
    pub alias: Option<String>,
    /// Why the answer is not a 200; never holds a secret.
    pub reason: Option<String>,
}

impl ContainerCredentials {
    pub fn new(broker: Arc<Broker>, grants: Arc<Grants>) -> ContainerCredentials {
        ContainerCredentials { broker, grants }
    }

    /// Answers one request. Any path: the operator chooses the URL, and the
    /// token alone says who is asking.
    pub async fn respond(&self, request: &http::request::Parts, now: SystemTime) -> Reply {
        if request.method != Method::GET && request.method != Method::HEAD {
            return refused(Refusal::Method, None);
        }
        let grant = match request.headers.get(header::AUTHORIZATION) {
            None => return refused(Refusal::MissingToken, None),
            Some(token) => match self.grants.check(token.as_bytes()) {
                Verdict::Granted(grant) => grant,
                Verdict::Malformed => return refused(Refusal::MalformedToken, None),
                Verdict::Unknown => return refused(Refusal::UnknownToken, None),
            },
        };
        let roles = self.broker.roles();
        let assignment = match self.broker.assign_grant(&roles, &grant.name, &grant.alias) {
            Ok(assignment) => assignment,
            Err(error) => return refused(error.into(), Some(grant)),
        };
        match self.broker.credentials(&assignment, now).await {
            Ok(held) => Reply {
                response: json(StatusCode::OK, document(&held.credentials, &assignment)),
                alias: Some(assignment.role.alias.clone()),
                grant: Some(grant),
                reason: None,
            },
            Err(error) => Reply {
                alias: Some(assignment.role.alias.clone()),
                ..refused(error.into(), Some(grant))
            },
        }
    }
}

fn refused(refusal: Refusal, grant: Option<Arc<Grant>>) -> Reply {
    Reply {
        response: error_response(&refusal),
        grant,
        alias: None,
        reason: Some(refusal.to_string()),
    }
}

/// The JSON error body both ways answer with: a fixed code and the reason.
fn error_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "code": refusal.code(),
        "message": refusal.to_string(),
    });
    let mut response = json(refusal.status(), body.to_string());
    if let Refusal::Method = refusal {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The ECS agent's credentials document, with the EKS agent's `AccountId`.
/// `Expiration` ends in `Z` (aws-config rejects `+00:00`).
fn document(credentials: &Credentials, assignment: &Assignment) -> String {
    serde_json::json!({
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key.expose(),
        "Token": credentials.session_token.expose(),
        "Expiration": timestamp(credentials.expiration),
        "RoleArn": assignment.role.arn.as_str(),
        "AccountId": assignment.role.arn.account(),
    })
    .to_string()
}

/// The listener: no state per connection (the token is checked on every
/// request, so a rotated token stops working on an open connection too).
impl Service for ContainerCredentials {
    type Connection = ();

    fn connect(&self, _peer: &Peer) {}

    async fn call(&self, _connection: &(), request: Request<'_>) -> Response<Full<Bytes>> {
        let reply = self.respond(&request.parts, SystemTime::now()).await;
        let mut response = reply.response;
        let grant = reply.grant.as_ref().map(|g| format!("grant:{}", g.name));
        request.finish(
            &mut response,
            Answered {
                container: grant.as_deref().unwrap_or("-"),
                alias: reply.alias.as_deref().unwrap_or("-"),
                route: ROUTE,
                reason: reply.reason.as_deref(),
            },
        );
        response
    }
}
