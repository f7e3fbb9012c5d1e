//! Operating the proxy: metrics that move, readiness that tells the truth,
//! shutdown that finishes what it started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use ec2metaproxy::broker::{spawn_prefetcher, Broker, Caller};
use ec2metaproxy::container::Container;
use ec2metaproxy::credentials::{CredentialCache, Timing};
use ec2metaproxy::health::{self, ProxyReadiness, Readiness};
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::{ContainerSource, EventStream, PlatformError};
use ec2metaproxy::reload::Live;
use ec2metaproxy::server::Limits;

use crate::raw::{container, listen, loopback_fixture, FakeSts, Listening};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

async fn metrics_listener(readiness: Arc<dyn Readiness>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(health::serve(listener, readiness, std::future::pending()));
    addr
}

/// The value of one sample line in the Prometheus text format, or 0.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Always(Result<(), String>);

impl Readiness for Always {
    fn ready(&self) -> Result<(), String> {
        self.0.clone()
    }
}

/// A Docker that cannot be reached.
struct Unreachable;

#[async_trait]
impl ContainerSource for Unreachable {
    async fn connect(&self) -> Result<(), PlatformError> {
        Err(PlatformError::Other("connection refused".into()))
    }
    async fn list(&self) -> Result<Vec<Container>, PlatformError> {
        Err(PlatformError::Other("connection refused".into()))
    }
    async fn inspect(&self, _: &str) -> Result<Option<Container>, PlatformError> {
        Err(PlatformError::Other("connection refused".into()))
    }
    fn events(&self) -> EventStream {
        Box::pin(futures_util::stream::pending())
    }
    fn describe(&self) -> String {
        "unreachable Docker".into()
    }
}

/// A Docker with one container and no events.
struct Static;

#[async_trait]
impl ContainerSource for Static {
    async fn list(&self) -> Result<Vec<Container>, PlatformError> {
        Ok(vec![container("one", "10.9.0.2", &[])])
    }
    async fn inspect(&self, _: &str) -> Result<Option<Container>, PlatformError> {
        Ok(None)
    }
    fn events(&self) -> EventStream {
        Box::pin(futures_util::stream::pending())
    }
    fn describe(&self) -> String {
        "static".into()
    }
}

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let addr = metrics_listener(Arc::new(Always(Err("not yet".into())))).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        get(addr, "/readyz").await,
        (503, "not ready: not yet\n".into())
    );
    assert_eq!(get(addr, "/elsewhere").await.0, 404);
}

#[tokio::test]
async fn readyz_is_503_while_docker_is_unreachable_and_200_once_synced() {
    let credentials = Arc::new(CredentialCache::new(
        Arc::new(FakeSts::default()),
        Timing::for_duration(Duration::from_secs(3600)),
    ));
    let down = metrics_listener(Arc::new(ProxyReadiness {
        index: ContainerIndex::watch(Arc::new(Unreachable)),
        credentials: credentials.clone(),
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(down, "/readyz").await,
        (
            503,
            "not ready: the Docker container index is not synced\n".into()
        )
    );
    let up = metrics_listener(Arc::new(ProxyReadiness {
        index: ContainerIndex::watch(Arc::new(Static)),
        credentials,
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(up, "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn metrics_count_requests_by_route_status_and_alias() {
    let f = loopback_fixture("scraped", vec![]).await;
    let listening = listen(f.imds.clone(), Limits::default()).await;
    let proxy = listening.addr;
    let scrape = metrics_listener(Arc::new(Always(Ok(())))).await;

    let listing = r#"ec2metaproxy_requests_total{alias="web",route="role-listing",status="200"}"#;
    let credentials =
        r#"ec2metaproxy_requests_total{alias="web",route="credentials",status="200"}"#;
    let (_, before) = get(scrape, "/metrics").await;
    get(proxy, "/latest/meta-data/iam/security-credentials/").await;
    get(proxy, "/latest/meta-data/iam/security-credentials/").await;
    get(proxy, "/latest/meta-data/iam/security-credentials/Web").await;
    let (status, after) = get(scrape, "/metrics").await;
    assert_eq!(status, 200);
    // Other tests in this process count too: compare differences, at least ours.
    assert!(
        sample(&after, listing) - sample(&before, listing) >= 2.0,
        "{after}"
    );
    assert!(
        sample(&after, credentials) - sample(&before, credentials) >= 1.0,
        "{after}"
    );
    for name in [
        "ec2metaproxy_request_duration_seconds_bucket",
        "ec2metaproxy_sts_calls_total{result=\"ok\"}",
        "ec2metaproxy_credential_cache_total{result=\"miss\"}",
        "ec2metaproxy_containers_indexed",
    ] {
        assert!(after.contains(name), "{name} missing from:\n{after}");
    }
    assert!(!after.contains("scraped"), "no container names in labels");
}

/// SIGTERM's path: stop accepting, let the request in flight finish.
#[tokio::test]
async fn shutdown_finishes_a_request_in_flight() {
    let f = loopback_fixture("slow", vec![]).await;
    *f.sts.delay.lock().unwrap() = Duration::from_millis(500);
    let Listening { addr, stop, server } = listen(f.imds.clone(), Limits::default()).await;
    let in_flight = tokio::spawn(get(addr, "/latest/meta-data/iam/security-credentials/Web"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"Code\" : \"Success\""));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once drained")
        .unwrap();
}

/// A container's first request finds its credentials already fetched: the
/// prefetcher acts on the index's start notice.
#[tokio::test]
async fn a_started_container_finds_its_credentials_ready() {
    let sts = Arc::new(FakeSts::default());
    *sts.clock.lock().unwrap() = std::time::SystemTime::now();
    let config = ec2metaproxy::config::Config::parse(
        r#"{"aliasToARN": {"d": "arn:aws:iam::111111111111:role/D"}, "defaultAlias": "d", "metadataURL": null}"#,
        "t",
    )
    .unwrap();
    let cache = Arc::new(CredentialCache::new(
        sts.clone(),
        Timing::for_duration(Duration::from_secs(3600)),
    ));
    let index = ContainerIndex::watch(Arc::new(Static));
    let changes = index.subscribe();
    let metadata = config.metadata_source("us-east-1");
    let live = Live::new(config);
    let broker = Arc::new(Broker::new(index, cache.clone(), live.roles()));
    let imds = Arc::new(ec2metaproxy::imds::Imds::new(
        broker.clone(),
        live.imds_settings(),
        ec2metaproxy::imds::token::TokenKey::random(),
        metadata,
    ));
    spawn_prefetcher(broker, changes);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while sts.calls.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no prefetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        &*sts.calls.lock().unwrap()[0].session_name,
        "one-one012345678"
    );
    let request = http::Request::get("/latest/meta-data/iam/security-credentials/D")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let reply = imds
        .respond(
            &Caller::address("10.9.0.2".parse().unwrap()),
            &request,
            std::time::SystemTime::now(),
        )
        .await;
    assert_eq!(reply.response.status(), 200);
    assert_eq!(
        sts.calls.lock().unwrap().len(),
        1,
        "the request was a cache hit"
    );
}

/// A gone container's credentials are dropped even when `roleSessionKey`
/// names its session, so they are never refreshed for nobody.
#[tokio::test]
async fn a_gone_containers_label_named_session_is_forgotten() {
    let sts = Arc::new(FakeSts::default());
    *sts.clock.lock().unwrap() = std::time::SystemTime::now();
    let config = ec2metaproxy::config::Config::parse(
        r#"{"aliasToARN": {"d": "arn:aws:iam::111111111111:role/D"}, "defaultAlias": "d",
            "metadataURL": null, "roleSessionKey": "Labels:com.example.user"}"#,
        "t",
    )
    .unwrap();
    let cache = Arc::new(CredentialCache::new(
        sts.clone(),
        Timing::for_duration(Duration::from_secs(3600)),
    ));
    let labelled = container("gone", "10.9.0.9", &[("com.example.user", "alice")]);
    let broker = Broker::new(
        ContainerIndex::fixed(vec![labelled.clone()]),
        cache.clone(),
        Live::new(config).roles(),
    );
    broker.prefetch(&labelled).await;
    assert_eq!(&*sts.calls.lock().unwrap()[0].session_name, "alice");
    assert_eq!(cache.len(), 1);
    broker.forget(&labelled);
    assert_eq!(cache.len(), 0);
}
