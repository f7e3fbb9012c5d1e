//! The IMDS protocol: one function from (caller, request) to response.
//!
//! The server does I/O only; every decision is made in [`Imds::respond`],
//! which reads snapshots (its settings, and through the broker the alias
//! map, the container index and the credential cache) and holds no lock
//! across an `.await`. Status codes follow how the SDKs react
//! (see docs/ARCHITECTURE.md): 401 only for a bad token, 404 for anything a
//! client should read as "no credentials here", 5xx only for real failures.

pub mod document;
pub mod local;
pub mod path;
pub mod remembered;
pub mod token;
pub mod upstream;

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use crate::broker::{Broker, Caller};
use crate::container::Container;
use crate::credentials::sts::StsError;
use crate::roles::{Assignment, Role, RoleError, RoleMap};
use crate::server::{Answered, Peer, Request, Service};
use crate::time::unix_secs;
use local::LocalMetadata;
use path::{canonicalize, classify, ContainerRoute, Flavor, PathError, Route, Version};
use token::{Holder, TokenKey};
use upstream::{Upstream, UpstreamError};

pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
// Parsed once: a lookup by `&str` parses and hashes the name every time.
const TOKEN_NAME: HeaderName = HeaderName::from_static(TOKEN_HEADER);
const TTL_NAME: HeaderName = HeaderName::from_static(TTL_HEADER);
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where SDKs send metadata requests (IPv4, and IPv6 on Nitro): what a
/// container's socket names as its remote end when a DNAT rule inside its
/// own namespace, or a host rule, brought it here.
const METADATA_ADDRESSES: [SocketAddr; 2] = [
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), 80),
    SocketAddr::new(
        std::net::IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        80,
    ),
];

/// Why a request gets no plain answer, in the words its response line
/// gives. [`Refusal::status`] maps each to the status that makes SDKs do
/// the right thing (docs/ARCHITECTURE.md), in one match: a new refusal
/// must choose its status. The body is always IMDS's fixed page; the words
/// go to the log, never to the caller.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    BadPath(#[from] PathError),
    #[error("token PUT without a TTL of 1..=21600 seconds")]
    BadTtl,
    #[error("token PUT on a dated API version")]
    DatedTokenPut,
    #[error("token PUT carries X-Forwarded-For")]
    ForwardedTokenPut,
    /// A 401 here would send Go and JS clients to fetch a new token, which
    /// is refused too: a loop. 403 ends it.
    #[error("token request carries X-Forwarded-For")]
    ForwardedToken,
    #[error("invalid or expired token")]
    BadToken,
    #[error("IMDSv1 refused: requireToken is set")]
    TokenRequired,
    #[error("method not allowed here")]
    Method { allow: &'static str },
    #[error("not an IMDS path")]
    NotImdsPath,
    #[error("no running container has this address")]
    UnknownCaller,
    #[error(transparent)]
    Caller(#[from] crate::broker::Refusal),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("asked for role {0:?}, which is not this container's")]
    OtherRole(String),
    #[error("{0}")]
    Denied(&'static str),
    #[error("not in the local metadata tree")]
    NotLocal,
    #[error(transparent)]
    Sts(#[from] StsError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl Refusal {
    /// 400 is final for botocore and aws-config; 401 makes clients fetch a
    /// new token; 404 means "no credentials here" and burns no retries; 5xx
    /// only for real failures.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadPath(_) | Refusal::BadTtl => StatusCode::BAD_REQUEST,
            Refusal::BadToken | Refusal::TokenRequired => StatusCode::UNAUTHORIZED,
            Refusal::DatedTokenPut | Refusal::ForwardedTokenPut | Refusal::ForwardedToken => {
                StatusCode::FORBIDDEN
            }
            Refusal::NotImdsPath
            | Refusal::UnknownCaller
            | Refusal::Caller(_)
            | Refusal::Role(_)
            | Refusal::OtherRole(_)
            | Refusal::Denied(_)
            | Refusal::NotLocal => StatusCode::NOT_FOUND,
            Refusal::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Upstream(_) => StatusCode::BAD_GATEWAY,
            Refusal::Sts(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A response and what the response log line says about it.
pub struct Reply {
    pub response: Response<Full<Bytes>>,
    pub container: Option<Arc<Container>>,
    pub role: Option<Arc<Role>>,
    /// Why the answer is not a plain 200; never holds a secret.
    pub reason: Option<Cow<'static, str>>,
    /// The kind of route, for metrics: a fixed, low-cardinality name.
    pub route: &'static str,
    /// A credentials answer the connection may give again; see [`remembered`].
    remember: Option<Box<remembered::Answer>>,
}

impl Reply {
    fn new(response: Response<Full<Bytes>>) -> Reply {
        Reply {
            response,
            container: None,
            role: None,
            reason: None,
            route: "invalid",
            remember: None,
        }
    }

    fn refused(refusal: Refusal) -> Reply {
        let mut response = document::status_page(refusal.status());
        if let Refusal::Method { allow } = refusal {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        Reply {
            reason: Some(refusal.to_string().into()),
            ..Reply::new(response)
        }
    }

    fn with(mut self, container: &Arc<Container>, role: Option<&Arc<Role>>) -> Reply {
        self.container = Some(container.clone());
        self.role = role.cloned();
        self
    }
}

/// What the door reads on every request, swapped whole when the config
/// is reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Metadata path prefixes (after the API version) that may reach the upstream.
    pub passthrough: Vec<String>,
    /// Refuse IMDSv1: a GET without a token is 401.
    pub require_token: bool,
}

/// Where the metadata that is not the container's own comes from.
#[derive(Debug, Clone)]
pub enum MetadataSource {
    /// The real metadata service at this URL.
    Upstream(http::Uri),
    /// No metadata service: the synthesised tree.
    Local(LocalMetadata),
}

/// Everything a request needs, shared by all connections.
pub struct Imds {
    broker: Arc<Broker>,
    settings: Arc<ArcSwap<Settings>>,
    tokens: TokenKey,
    metadata: Metadata,
}

/// What answers the metadata that is not the container's own.
enum Metadata {
    Upstream(Box<Upstream>),
    Local(LocalMetadata),
}

impl Imds {
    pub fn new(
        broker: Arc<Broker>,
        settings: Arc<ArcSwap<Settings>>,
        tokens: TokenKey,
        metadata: MetadataSource,
    ) -> Imds {
        let metadata = match metadata {
            MetadataSource::Upstream(url) => Metadata::Upstream(Box::new(Upstream::new(&url))),
            MetadataSource::Local(local) => Metadata::Local(local),
        };
        Imds {
            broker,
            settings,
            tokens,
            metadata,
        }
    }

    /// Answers one request from `caller`. The body of the request is never read.
    pub async fn respond(
        &self,
        caller: &Caller,
        request: &http::request::Parts,
        now: SystemTime,
    ) -> Reply {
        let path = match canonicalize(request.uri.path()) {
            Ok(path) => path,
            Err(error) => return Reply::refused(error.into()),
        };
        let settings = self.settings.load();
        let route = classify(&path, &settings.passthrough);
        let kind = route_kind(&route);
        let mut reply = self.answer(caller, request, route, &settings, now).await;
        reply.route = kind;
        reply
    }

    async fn answer(
        &self,
        caller: &Caller,
        request: &http::request::Parts,
        route: Route<'_>,
        settings: &Arc<Settings>,
        now: SystemTime,
    ) -> Reply {
        let headers = &request.headers;
        let unix_now = unix_secs(now);
        let asked = match route {
            Route::Token { .. } if request.method != Method::PUT => {
                return Reply::refused(Refusal::Method { allow: "PUT" })
            }
            Route::Token { version } => {
                return Box::pin(self.issue_token(caller, &version, headers, unix_now)).await
            }
            Route::NotFound => return Reply::refused(Refusal::NotImdsPath),
            Route::Container(asked) => asked,
        };
        if request.method != Method::GET && request.method != Method::HEAD {
            return Reply::refused(Refusal::Method { allow: "GET, HEAD" });
        }
        // Read before the lookup, for a remembered answer (see `remembered`).
        let index_generation = self.broker.index_generation();
        let container = match self.broker.identify(caller).await {
            Ok(container) => container,
            Err(refusal) => return Reply::refused(refusal.into()),
        };
        let holder = Holder::new(caller.ip, container.as_deref().map(|c| c.id.as_str()));
        if let Some(refusal) = self.token_refusal(headers, holder, settings, unix_now) {
            return Reply::refused(refusal);
        }
        let Some(container) = container else {
            return Reply::refused(Refusal::UnknownCaller);
        };
        let roles = self.broker.roles();
        let assignment = match self.broker.assign(&roles, &container).await {
            Ok(assignment) => assignment,
            Err(error) => return Reply::refused(error.into()).with(&container, None),
        };
        let role = &assignment.role;
        let answered = match asked {
            ContainerRoute::IamIndex => {
                Ok(Reply::new(document::text("info\nsecurity-credentials/")))
            }
            ContainerRoute::RoleListing(_) => {
                Ok(Reply::new(document::text(role.arn.name().to_string())))
            }
            ContainerRoute::IamInfo => Ok(Reply::new(document::iam_info(&role.arn, now))),
            ContainerRoute::RoleCredentials(_, name) if name != role.arn.name() => {
                Err(Refusal::OtherRole(name.to_string()))
            }
            ContainerRoute::RoleCredentials(flavor, _) => {
                let remember = Remembrance {
                    path: request.uri.path(),
                    roles: &roles,
                    settings,
                    index_generation,
                    container: &container,
                };
                self.credentials_reply(&assignment, flavor, now, remember)
                    .await
            }
            ContainerRoute::Passthrough(path) => {
                Box::pin(self.passthrough(&request.method, &path, now)).await
            }
            ContainerRoute::Denied(why) => Err(Refusal::Denied(why)),
        };
        answered
            .unwrap_or_else(Reply::refused)
            .with(&container, Some(role))
    }

    /// Why a GET from `holder` is refused for its token (or the lack of
    /// one), if it is. The one token rule for `respond` and for a
    /// remembered answer alike.
    fn token_refusal(
        &self,
        headers: &http::HeaderMap,
        holder: Holder<'_>,
        settings: &Settings,
        unix_now: u64,
    ) -> Option<Refusal> {
        match headers.get(&TOKEN_NAME) {
            Some(_) if headers.contains_key(&FORWARDED_FOR) => Some(Refusal::ForwardedToken),
            Some(token) if !self.tokens.is_valid(token.as_bytes(), holder, unix_now) => {
                Some(Refusal::BadToken)
            }
            Some(_) => None,
            None if settings.require_token => Some(Refusal::TokenRequired),
            None => None,
        }
    }

    async fn issue_token(
        &self,
        caller: &Caller,
        version: &Version,
        headers: &http::HeaderMap,
        unix_now: u64,
    ) -> Reply {
        if *version != Version::Latest {
            return Reply::refused(Refusal::DatedTokenPut);
        }
        if headers.contains_key(&FORWARDED_FOR) {
            return Reply::refused(Refusal::ForwardedTokenPut);
        }
        let Some(ttl) = token::parse_ttl(headers.get(&TTL_NAME)) else {
            return Reply::refused(Refusal::BadTtl);
        };
        // A token is never minted for a connection that fails the proof.
        let container = match self.broker.identify(caller).await {
            Ok(container) => container,
            Err(refusal) => return Reply::refused(refusal.into()),
        };
        let holder = Holder::new(caller.ip, container.as_deref().map(|c| c.id.as_str()));
        let token = self.tokens.issue(holder, ttl, unix_now);
        let mut response = document::text(token);
        // aws-config fails without this echo; old Go and Ruby fall back to IMDSv1.
        response
            .headers_mut()
            .insert(TTL_NAME, HeaderValue::from(ttl));
        let reply = Reply::new(response);
        match &container {
            Some(container) => reply.with(container, None),
            None => reply,
        }
    }

    async fn credentials_reply(
        &self,
        assignment: &Assignment,
        flavor: Flavor,
        now: SystemTime,
        remember: Remembrance<'_>,
    ) -> Result<Reply, Refusal> {
        let held = self.broker.credentials(assignment, now).await?;
        let account = (flavor == Flavor::Extended).then(|| assignment.role.arn.account());
        let body = document::credentials_body(&held.credentials, account);
        let mut reply = Reply::new(document::text(body.clone()));
        // Only containers of the Docker index: a static mapping's stand-in
        // can change without the index's generation moving.
        if !remember.container.is_stand_in() {
            reply.remember = Some(Box::new(remembered::Answer {
                path: remember.path.into(),
                roles: remember.roles.clone(),
                settings: remember.settings.clone(),
                index_generation: remember.index_generation,
                container: remember.container.clone(),
                role: assignment.role.clone(),
                credentials: held,
                body: Bytes::copy_from_slice(&body),
            }));
        }
        Ok(reply)
    }

    async fn passthrough(
        &self,
        method: &Method,
        path: &str,
        now: SystemTime,
    ) -> Result<Reply, Refusal> {
        match &self.metadata {
            Metadata::Local(local) => {
                // The canonical path: the version, then the segments asked for.
                let segments: Vec<&str> =
                    path.split('/').filter(|s| !s.is_empty()).skip(1).collect();
                local
                    .answer(&segments, now)
                    .map(Reply::new)
                    .ok_or(Refusal::NotLocal)
            }
            Metadata::Upstream(upstream) => {
                let response = upstream.fetch(method, path).await?;
                Ok(Reply::new(if is_meta_data_index(path) {
                    without_identity_entries(response)
                } else {
                    response
                }))
            }
        }
    }
}

/// One IMDS connection: its caller, proven once, and its last
/// credentials answer.
pub struct Connection {
    caller: Caller,
    memory: remembered::Remembered,
}

/// The IMDS listener: each connection remembers its last credentials
/// answer; every other request goes to [`Imds::respond`].
impl Service for Imds {
    type Connection = Connection;

    fn connect(&self, peer: &Peer) -> Connection {
        let mut dialled: Vec<SocketAddr> = peer.original_dst.into_iter().collect();
        dialled.push(peer.local);
        for address in METADATA_ADDRESSES {
            if !dialled.contains(&address) {
                dialled.push(address);
            }
        }
        Connection {
            caller: Caller::new(peer.addr, dialled),
            memory: remembered::Remembered::default(),
        }
    }

    async fn call(&self, connection: &Connection, request: Request<'_>) -> Response<Full<Bytes>> {
        let Connection { caller, memory } = connection;
        let now = SystemTime::now();
        if let Some(mut hit) = self.remembered(memory, caller.ip, &request.parts, now) {
            let mut response = hit.take_response();
            request.finish(
                &mut response,
                Answered {
                    container: hit.container_name(),
                    alias: hit.alias(),
                    route: "credentials",
                    reason: None,
                },
            );
            return response;
        }
        let mut reply = self.respond(caller, &request.parts, now).await;
        memory.keep(&mut reply);
        let mut response = reply.response;
        request.finish(
            &mut response,
            Answered {
                container: reply.container.as_ref().map_or("-", |c| c.name.as_str()),
                alias: reply.role.as_ref().map_or("-", |r| r.alias.as_str()),
                route: reply.route,
                reason: reply.reason.as_deref(),
            },
        );
        response
    }
}

/// What a credentials answer was computed from, beyond the assignment.
struct Remembrance<'a> {
    path: &'a str,
    roles: &'a Arc<RoleMap>,
    settings: &'a Arc<Settings>,
    index_generation: u64,
    container: &'a Arc<Container>,
}

/// `/VERSION/meta-data/`: the listing of metadata categories.
fn is_meta_data_index(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.next().is_some() && segments.next() == Some("meta-data") && segments.next().is_none()
}

/// The host's listing names categories a container can never read here;
/// leave out the one that exists only to hand out the host's identity.
fn without_identity_entries(response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    let Some(body) = body.collect().now_or_never().and_then(|b| b.ok()) else {
        return Response::from_parts(parts, Full::new(Bytes::new()));
    };
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let kept: Vec<&str> = text
        .split('\n')
        .filter(|entry| {
            !entry
                .trim_end_matches('/')
                .eq_ignore_ascii_case("identity-credentials")
        })
        .collect();
    let mut parts = parts;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(Bytes::from(kept.join("\n"))))
}

fn route_kind(route: &Route) -> &'static str {
    match route {
        Route::Token { .. } => "token",
        Route::NotFound => "not-found",
        Route::Container(asked) => match asked {
            ContainerRoute::IamIndex => "iam-index",
            ContainerRoute::IamInfo => "iam-info",
            ContainerRoute::RoleListing(_) => "role-listing",
            ContainerRoute::RoleCredentials(_, _) => "credentials",
            ContainerRoute::Passthrough(_) => "passthrough",
            ContainerRoute::Denied(_) => "denied",
        },
    }
}
