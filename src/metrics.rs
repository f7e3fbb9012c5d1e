//! Prometheus metrics, and the separate listener that serves them with the
//! health checks. Never on the container-facing listener: containers must
//! not learn the host's aliases or traffic.
//!
//! Labels stay low-cardinality: route kinds, status codes, aliases from the
//! config, STS error codes. No container IDs or names.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;

use crate::credentials::CredentialCache;
use crate::docker::ContainerIndex;

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub sts_calls: IntCounterVec,
    pub cache: IntCounterVec,
    pub containers: IntGauge,
    pub reloads: IntCounterVec,
    pub event_stream_reconnects: IntCounter,
}

impl Metrics {
    fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("ec2metaproxy".into()), None).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests answered, by route kind, status and alias",
            ),
            &["route", "status", "alias"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time to answer, by route kind")
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                ]),
            &["route"],
        )
        .expect("valid metric");
        let sts_calls = IntCounterVec::new(
            Opts::new(
                "sts_calls_total",
                "AssumeRole calls, by result (ok or STS's error code)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cache = IntCounterVec::new(
            Opts::new(
                "credential_cache_total",
                "Credential lookups, by hit or miss",
            ),
            &["result"],
        )
        .expect("valid metric");
        let containers = IntGauge::new("containers_indexed", "Container addresses in the index")
            .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Config reloads, by result"),
            &["result"],
        )
        .expect("valid metric");
        let event_stream_reconnects = IntCounter::new(
            "docker_event_stream_reconnects_total",
            "Times the Docker event stream broke and was resubscribed",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(sts_calls.clone()),
            Box::new(cache.clone()),
            Box::new(containers.clone()),
            Box::new(reloads.clone()),
            Box::new(event_stream_reconnects.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            sts_calls,
            cache,
            containers,
            reloads,
            event_stream_reconnects,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The process's metrics: like the logger, one per process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

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

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    log::warn!("metrics listener: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(readiness.clone(), request));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    readiness: Arc<dyn Readiness>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => match readiness.ready() {
            Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_string()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics().render(),
        ),
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
    Ok(response)
}
