//! Prometheus metrics, and the separate listener that serves them with the
//! health checks. Never on the container-facing listener: containers must
//! not learn the host's aliases or traffic.
//!
//! Labels stay low-cardinality: route kinds, status codes, aliases from the
//! config, STS error codes. No container IDs or names.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::local::{LocalHistogram, LocalIntCounter};
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
    /// `cache{result="hit"}` and `{result="miss"}`, resolved once; hits
    /// are counted per thread with [`Metrics::count_cache_hit`].
    cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub containers: IntGauge,
    pub reloads: IntCounterVec,
    pub event_stream_reconnects: IntCounter,
    /// Every live thread's shard of the per-request counts.
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
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
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            cache,
            containers,
            reloads,
            event_stream_reconnects,
            shards: Mutex::new(Vec::new()),
        }
    }

    /// Counts one answered request and its latency, in this thread's shard.
    pub fn count_request(&self, route: &'static str, status: u16, alias: &str, seconds: f64) {
        let counted = self.with_shard(|shard| {
            let entry = match shard.routes.iter().position(|c| c.route == route) {
                Some(i) => &mut shard.routes[i],
                None => {
                    shard.routes.push(RouteShard {
                        route,
                        latency: self.latency.with_label_values(&[route]).local(),
                        requests: Vec::new(),
                    });
                    shard.routes.last_mut().expect("just pushed")
                }
            };
            entry.latency.observe(seconds);
            match entry
                .requests
                .iter()
                .find(|(s, a, _)| *s == status && &**a == alias)
            {
                Some((_, _, counter)) => counter.inc(),
                // Bounded: past this, a thread counts the rare combinations
                // straight into the shared counter.
                None if entry.requests.len() >= CACHED_PER_ROUTE => {
                    self.request_counter(route, status, alias).inc()
                }
                None => {
                    let counter = self.request_counter(route, status, alias).local();
                    counter.inc();
                    entry.requests.push((status, alias.into(), counter));
                }
            }
        });
        if !counted {
            self.latency.with_label_values(&[route]).observe(seconds);
            self.request_counter(route, status, alias).inc();
        }
    }

    /// Counts a credential lookup answered from the cache.
    pub fn count_cache_hit(&self) {
        let counted = self.with_shard(|shard| {
            shard
                .cache_hits
                .get_or_insert_with(|| self.cache_hits.local())
                .inc()
        });
        if !counted {
            self.cache_hits.inc();
        }
    }

    /// Runs `count` on this thread's shard; false when there is none to use
    /// (the thread is exiting, or a scrape is flushing it right now).
    fn with_shard(&self, count: impl FnOnce(&mut Shard)) -> bool {
        SHARD
            .try_with(|shard| match shard.0.try_lock() {
                Ok(mut shard) => {
                    count(&mut shard);
                    true
                }
                Err(_) => false,
            })
            .unwrap_or(false)
    }

    fn request_counter(&self, route: &str, status: u16, alias: &str) -> IntCounter {
        self.requests
            .with_label_values(&[route, &status.to_string(), alias])
    }

    /// The text exposition format, with every thread's counts so far.
    pub fn render(&self) -> String {
        for shard in self
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            shard.lock().unwrap_or_else(PoisonError::into_inner).flush();
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// (status, alias) combinations each thread keeps per route kind.
const CACHED_PER_ROUTE: usize = 64;

/// One thread's counts since the last scrape. Counting a request is plain
/// arithmetic on memory only this thread writes, behind a lock that only a
/// scrape also takes: the shared counters and histograms (atomics that every
/// request of every thread wrote before) move a cache line between cores on
/// each request. A scrape flushes every shard first, so what it shows is
/// exact.
#[derive(Default)]
struct Shard {
    routes: Vec<RouteShard>,
    cache_hits: Option<LocalIntCounter>,
}

/// One route kind's counts in a shard.
struct RouteShard {
    route: &'static str,
    latency: LocalHistogram,
    requests: Vec<(u16, Box<str>, LocalIntCounter)>,
}

impl Shard {
    fn flush(&mut self) {
        for route in &self.routes {
            route.latency.flush();
            for (_, _, counter) in &route.requests {
                counter.flush();
            }
        }
        if let Some(hits) = &self.cache_hits {
            hits.flush();
        }
    }
}

/// A thread's shard, registered with the metrics while the thread lives.
/// When the thread exits, its counts are flushed and the shard let go.
struct ThreadShard(Arc<Mutex<Shard>>);

impl ThreadShard {
    fn register() -> ThreadShard {
        let shard = Arc::new(Mutex::new(Shard::default()));
        metrics()
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard.clone());
        ThreadShard(shard)
    }
}

impl Drop for ThreadShard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush();
        metrics()
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|shard| !Arc::ptr_eq(shard, &self.0));
    }
}

thread_local! {
    static SHARD: ThreadShard = ThreadShard::register();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// The value of the sample named `name` (with its labels) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    }

    /// Counts `each` requests on each of `threads` threads, calls `scrape`
    /// while they are all alive, and returns their shards once they exited.
    fn count_on_threads(
        route: &'static str,
        threads: usize,
        each: usize,
        scrape: impl FnOnce(),
    ) -> Vec<std::sync::Weak<Mutex<Shard>>> {
        let counted = Arc::new(Barrier::new(threads + 1));
        let scraped = Arc::new(Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (counted, scraped) = (counted.clone(), scraped.clone());
                std::thread::spawn(move || {
                    for _ in 0..each {
                        metrics().count_request(route, 200, "shard-alias", 0.0002);
                    }
                    counted.wait();
                    scraped.wait();
                    SHARD.with(|shard| Arc::downgrade(&shard.0))
                })
            })
            .collect();
        counted.wait();
        scrape();
        scraped.wait();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn a_scrape_sees_every_live_threads_counts() {
        let _ = count_on_threads("shard-live", 4, 250, || {
            let text = metrics().render();
            assert_eq!(
                sample(
                    &text,
                    r#"ec2metaproxy_requests_total{alias="shard-alias",route="shard-live",status="200"}"#
                ),
                Some(1000.0),
                "{text}"
            );
            assert_eq!(
                sample(
                    &text,
                    r#"ec2metaproxy_request_duration_seconds_bucket{route="shard-live",le="0.00025"}"#
                ),
                Some(1000.0)
            );
            assert_eq!(
                sample(
                    &text,
                    r#"ec2metaproxy_request_duration_seconds_count{route="shard-live"}"#
                ),
                Some(1000.0)
            );
        });
    }

    #[test]
    fn a_thread_that_exits_leaves_its_counts_and_no_shard() {
        let shards = count_on_threads("shard-exited", 3, 100, || {});
        let text = metrics().render();
        assert_eq!(
            sample(
                &text,
                r#"ec2metaproxy_requests_total{alias="shard-alias",route="shard-exited",status="200"}"#
            ),
            Some(300.0),
            "{text}"
        );
        assert!(
            shards.iter().all(|shard| shard.upgrade().is_none()),
            "the exited threads' shards are let go"
        );
    }
}
