//! Prometheus metrics: the registry every layer counts into. The health
//! listener (`health`) serves them; never the container-facing listener:
//! containers must not learn the host's aliases or traffic.
//!
//! Labels stay low-cardinality: route kinds, status codes, aliases from the
//! config, STS error codes. No container IDs or names.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub sts_calls: IntCounterVec,
    /// AssumeRole refusals caused by session tags or SourceIdentity.
    pub sts_tagging_errors: IntCounterVec,
    pub cache: IntCounterVec,
    /// `cache{result="hit"}` and `{result="miss"}`, resolved once.
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
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
        let sts_tagging_errors = IntCounterVec::new(
            Opts::new(
                "sts_tagging_errors_total",
                "AssumeRole refusals caused by session tags or SourceIdentity, by alias and cause",
            ),
            &["alias", "cause"],
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
            Box::new(sts_tagging_errors.clone()),
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
            sts_tagging_errors,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            cache,
            containers,
            reloads,
            event_stream_reconnects,
        }
    }

    /// Counts one answered request and its latency. The labelled children
    /// are looked up in a small per-thread cache first, which spares the
    /// per-request hashing and the shared lock of `with_label_values`.
    pub fn count_request(&self, route: &'static str, status: u16, alias: &str, seconds: f64) {
        let counted = REQUEST_CHILDREN.with(|children| {
            let Ok(mut children) = children.try_borrow_mut() else {
                return false;
            };
            let entry = match children.iter().position(|c| c.route == route) {
                Some(i) => &mut children[i],
                None => {
                    children.push(RouteChildren {
                        route,
                        latency: self.latency.with_label_values(&[route]),
                        requests: Vec::new(),
                    });
                    let last = children.len() - 1;
                    &mut children[last]
                }
            };
            entry.latency.observe(seconds);
            match entry
                .requests
                .iter()
                .find(|(s, a, _)| *s == status && &**a == alias)
            {
                Some((_, _, counter)) => counter.inc(),
                None => {
                    let counter = self.request_counter(route, status, alias);
                    counter.inc();
                    // Bounded: past this, a thread counts the rare
                    // combinations without caching them.
                    if entry.requests.len() < CACHED_PER_ROUTE {
                        entry.requests.push((status, alias.into(), counter));
                    }
                }
            }
            true
        });
        if !counted {
            self.latency.with_label_values(&[route]).observe(seconds);
            self.request_counter(route, status, alias).inc();
        }
    }

    fn request_counter(&self, route: &str, status: u16, alias: &str) -> IntCounter {
        self.requests
            .with_label_values(&[route, &status.to_string(), alias])
    }

    /// The text exposition format.
    pub fn render(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// (status, alias) combinations each thread caches per route kind.
const CACHED_PER_ROUTE: usize = 64;

/// One route kind's metric children, as one thread has met them.
struct RouteChildren {
    route: &'static str,
    latency: Histogram,
    requests: Vec<(u16, Box<str>, IntCounter)>,
}

thread_local! {
    static REQUEST_CHILDREN: std::cell::RefCell<Vec<RouteChildren>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The process's metrics: like the logger, one per process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
