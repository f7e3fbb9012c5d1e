//! The operator's front door: `/healthz`, `/readyz` and `/metrics`, on a
//! listener of their own (`metricsListen`) that containers are not meant
//! to reach. Served through `server` like the IMDS door, without request
//! lines: scrapes are not traffic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::credentials::CredentialCache;
use crate::metrics::metrics;
use crate::platform::index::ContainerIndex;
use crate::server::{Limits, Peer, Request, Service};

/// What `/readyz` asks.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready, else why not.
    fn ready(&self) -> Result<(), String>;
}

/// The proxy's readiness: the Docker index is synced, and STS answers or
/// credentials are cached to serve meanwhile.
pub struct ProxyReadiness {
    pub index: Arc<ContainerIndex>,
    pub credentials: Arc<CredentialCache>,
}

impl Readiness for ProxyReadiness {
    fn ready(&self) -> Result<(), String> {
        if !self.index.is_synced() {
            return Err("the Docker container index is not synced".into());
        }
        self.credentials.ready()
    }
}

/// The health listener's settings, as it always had them: a header
/// timeout, and no caps, drain or request lines (it is the operator's).
fn limits() -> Limits {
    Limits {
        max_connections: usize::MAX,
        max_connections_per_ip: usize::MAX,
        header_read_timeout: Duration::from_secs(5),
        max_head_bytes: None,
        drain: Duration::ZERO,
        log_requests: false,
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    crate::server::serve(listener, Arc::new(Health { readiness }), limits(), shutdown).await
}

struct Health {
    readiness: Arc<dyn Readiness>,
}

impl Service for Health {
    type Connection = ();

    fn connect(&self, _peer: &Peer) {}

    async fn call(&self, _connection: &(), request: Request<'_>) -> Response<Full<Bytes>> {
        answer(&*self.readiness, &request.parts)
    }
}

fn answer(readiness: &dyn Readiness, request: &http::request::Parts) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri.path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => match readiness.ready() {
            Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => match metrics().render() {
            Ok(text) => (StatusCode::OK, "text/plain; version=0.0.4", text),
            Err(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot render the metrics: {error}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
