//! Operating the proxy: metrics that move, readiness that tells the truth,
//! shutdown that finishes what it started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ec2metaproxy::health::{ProxyReadiness, Readiness};
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::server::Limits;

use crate::support::docker::{container, FakeDocker};
use crate::support::exchange::{self, request};
use crate::support::host::{listen_health, Host, Listening};
use crate::support::sts::{self, FakeSts};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = exchange::get(addr, path).await;
    (answer.status, answer.body)
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

/// One alias, no upstream.
const ONE_ROLE: &str = r#"{"aliasToARN": {"d": "arn:aws:iam::111111111111:role/D"}, "defaultAlias": "d", "metadataURL": null}"#;

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let addr = listen_health(Arc::new(Always(Err("not yet".into())))).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        get(addr, "/readyz").await,
        (503, "not ready: not yet\n".into())
    );
    assert_eq!(get(addr, "/elsewhere").await.0, 404);
}

#[tokio::test]
async fn readyz_is_503_while_docker_is_unreachable_and_200_once_synced() {
    let credentials = sts::cache(Arc::new(FakeSts::default()));
    let down = listen_health(Arc::new(ProxyReadiness {
        index: ContainerIndex::watch(FakeDocker::unreachable()),
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
    let up = listen_health(Arc::new(ProxyReadiness {
        index: ContainerIndex::watch(FakeDocker::new(vec![container("one", "10.9.0.2", &[])])),
        credentials,
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(up, "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn metrics_count_requests_by_route_status_and_alias() {
    let host = Host::standard().loopback("scraped").start().await;
    let listening = host.listen(Limits::default()).await;
    let proxy = listening.addr;
    let scrape = listen_health(Arc::new(Always(Ok(())))).await;

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

/// SIGTERM's path: stop accepting, let the request in flight finish: the
/// stop comes while the request waits on STS. (On the real clock, as every
/// test through a socket: see `raw::server`.)
#[tokio::test]
async fn shutdown_finishes_a_request_in_flight() {
    let host = Host::standard().loopback("slow").start().await;
    *host.sts.delay.lock().unwrap() = Duration::from_millis(500);
    let Listening { addr, stop, server } = host.listen(Limits::default()).await;
    let in_flight = tokio::spawn(get(addr, "/latest/meta-data/iam/security-credentials/Web"));
    let started = tokio::time::Instant::now();
    while host.sts.count() == 0 {
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "no request in flight"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
/// prefetcher acts on the index's start notice. In process, so on tokio's
/// paused clock: the waits for the prefetch take no real time.
#[tokio::test(start_paused = true)]
async fn a_started_container_finds_its_credentials_ready() {
    let host = Host::builder(ONE_ROLE)
        .container(container("one", "10.9.0.2", &[]))
        .prefetching()
        .sts_issues_at(SystemTime::now())
        .start()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while host.sts.calls.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no prefetch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        &*host.sts.calls.lock().unwrap()[0].session_name,
        "one-one012345678"
    );
    let request = request("GET", "/latest/meta-data/iam/security-credentials/D", &[]);
    let answer = host.respond("10.9.0.2", &request, SystemTime::now()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        host.sts.calls.lock().unwrap().len(),
        1,
        "the request was a cache hit"
    );
}

/// A gone container's credentials are dropped even when `roleSessionKey`
/// names its session, so they are never refreshed for nobody.
#[tokio::test]
async fn a_gone_containers_label_named_session_is_forgotten() {
    let labelled = container("gone", "10.9.0.9", &[("com.example.user", "alice")]);
    let host = Host::builder(ONE_ROLE)
        .set(r#"{"roleSessionKey": "Labels:com.example.user"}"#)
        .container(labelled.clone())
        .sts_issues_at(SystemTime::now())
        .start()
        .await;
    host.broker.prefetch(&labelled).await;
    assert_eq!(&*host.sts.calls.lock().unwrap()[0].session_name, "alice");
    assert_eq!(host.credentials.len(), 1);
    host.broker.forget(&labelled).await;
    assert_eq!(host.credentials.len(), 0);
}

/// The same for a session named by a `roleSessionName` template and
/// carrying tags: the key forgotten is the one the container was served.
#[tokio::test]
async fn a_gone_containers_templated_and_tagged_session_is_forgotten() {
    let tagged = container("gone", "10.9.0.9", &[("com.docker.compose.service", "api")]);
    let host = Host::builder(ONE_ROLE)
        .set(r#"{"roleSessionName": "{composeService}-{shortId}", "sessionTags": {"service": "{composeService}"}}"#)
        .container(tagged.clone())
        .sts_issues_at(SystemTime::now())
        .start()
        .await;
    host.broker.prefetch(&tagged).await;
    let sent = host.sts.calls.lock().unwrap()[0].clone();
    assert!(sent.session_name.starts_with("api-"), "{sent:?}");
    assert_eq!(&*sent.tags, [(Arc::from("service"), Arc::from("api"))]);
    assert_eq!(host.credentials.len(), 1);
    host.broker.forget(&tagged).await;
    assert_eq!(host.credentials.len(), 0);
}
