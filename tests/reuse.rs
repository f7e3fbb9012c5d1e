//! An address that changes hands. Docker frees a container's address only
//! after its process exits, but tells the proxy some milliseconds later (or
//! much later while its event stream is down). The proxy asks the kernel, so
//! the address's next owner is never served as the container that left,
//! and cannot use its tokens.

use std::net::IpAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use http_body_util::BodyExt;

use ec2metaproxy::broker::{Broker, Caller};
use ec2metaproxy::config::Config;
use ec2metaproxy::container::{Container, Process};
use ec2metaproxy::credentials::{CredentialCache, Timing};
use ec2metaproxy::imds::token::TokenKey;
use ec2metaproxy::imds::{Imds, TOKEN_HEADER, TTL_HEADER};
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::{ContainerSource, EventStream, PlatformError};
use ec2metaproxy::reload::Live;
use ec2metaproxy::sys::ProcessWatch;

use crate::raw::{container, request, FakeSts};

const ADDRESS: &str = "10.77.0.2";

/// A Docker whose list the test rewrites and which sends no events, as
/// when its event stream lags behind.
pub(crate) struct SilentDocker {
    pub(crate) running: Mutex<Vec<Container>>,
}

impl SilentDocker {
    /// A Docker running `containers`, and an index of them, synced.
    pub(crate) async fn indexed(
        containers: Vec<Container>,
    ) -> (Arc<SilentDocker>, Arc<ContainerIndex>) {
        let docker = Arc::new(SilentDocker {
            running: Mutex::new(containers),
        });
        let index = ContainerIndex::watch(docker.clone());
        let deadline = Instant::now() + Duration::from_secs(2);
        while !index.is_synced() {
            assert!(Instant::now() < deadline, "index never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (docker, index)
    }
}

#[async_trait]
impl ContainerSource for SilentDocker {
    async fn list(&self) -> Result<Vec<Container>, PlatformError> {
        Ok(self.running.lock().unwrap().clone())
    }
    async fn inspect(&self, id: &str) -> Result<Option<Container>, PlatformError> {
        let running = self.running.lock().unwrap();
        Ok(running.iter().find(|c| c.id == id).cloned())
    }
    fn events(&self) -> EventStream {
        Box::pin(futures_util::stream::pending())
    }
    fn describe(&self) -> String {
        "silent Docker".into()
    }
}

struct Host {
    docker: Arc<SilentDocker>,
    imds: Imds,
    /// The old owner's init process.
    process: Child,
}

impl Host {
    /// A host where a `web` container with a live process holds ADDRESS.
    async fn start() -> Host {
        let process = Command::new("sleep").arg("30").spawn().unwrap();
        let watch = ProcessWatch::unchecked(process.id() as i32).unwrap();
        let old = container("old", ADDRESS, &[("ec2metaproxy.RoleAlias", "web")])
            .with_process(Process::Watched(Arc::new(watch)));
        let (docker, index) = SilentDocker::indexed(vec![old]).await;
        let config = Config::parse(
            r#"{"aliasToARN": {"web": "arn:aws:iam::111111111111:role/Web",
                               "batch": "arn:aws:iam::111111111111:role/Batch"},
                "defaultAlias": "web", "metadataURL": null}"#,
            "test.json",
        )
        .unwrap();
        let credentials = Arc::new(CredentialCache::new(
            Arc::new(FakeSts::default()),
            Timing::for_duration(Duration::from_secs(3600)),
        ));
        let metadata = config.metadata_source("us-east-1");
        let live = Live::new(config);
        let imds = Imds::new(
            Arc::new(Broker::new(index, credentials, live.roles())),
            live.imds_settings(),
            TokenKey::random(),
            metadata,
        );
        Host {
            docker,
            imds,
            process,
        }
    }

    /// The old owner stops; Docker gives its address to a `batch` container
    /// (or to nobody yet) and says nothing.
    fn old_owner_exits(&mut self, next_owner: Option<Container>) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        let mut running = self.docker.running.lock().unwrap();
        if let Some(next) = next_owner {
            running.retain(|c| c.ips != next.ips);
            running.push(next);
        }
    }

    async fn ask(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let parts = request(method, path, headers);
        let caller: IpAddr = ADDRESS.parse().unwrap();
        let reply = self
            .imds
            .respond(&Caller::address(caller), &parts, SystemTime::now())
            .await;
        let status = reply.response.status().as_u16();
        let body = reply.response.into_body().collect().await.unwrap();
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    async fn role(&self, token: Option<&str>) -> (u16, String) {
        let headers: Vec<(&str, &str)> = token.map(|t| (TOKEN_HEADER, t)).into_iter().collect();
        self.ask(
            "GET",
            "/latest/meta-data/iam/security-credentials/",
            &headers,
        )
        .await
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn batch() -> Container {
    container("new", ADDRESS, &[("ec2metaproxy.RoleAlias", "batch")])
}

#[tokio::test]
async fn the_next_owner_of_an_address_gets_its_own_role_before_docker_says_so() {
    let mut host = Host::start().await;
    assert_eq!(host.role(None).await, (200, "Web".into()));
    host.old_owner_exits(Some(batch()));
    assert_eq!(host.role(None).await, (200, "Batch".into()));
}

#[tokio::test]
async fn an_exited_container_is_not_served_while_docker_still_lists_it() {
    let mut host = Host::start().await;
    assert_eq!(host.role(None).await, (200, "Web".into()));
    host.old_owner_exits(None);
    let (status, _) = host.role(None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_token_is_refused_from_the_next_owner_of_its_address() {
    let mut host = Host::start().await;
    let (status, token) = host
        .ask("PUT", "/latest/api/token", &[(TTL_HEADER, "600")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(host.role(Some(&token)).await, (200, "Web".into()));
    host.old_owner_exits(Some(batch()));
    assert_eq!(host.role(Some(&token)).await.0, 401);
    let (_, fresh) = host
        .ask("PUT", "/latest/api/token", &[(TTL_HEADER, "600")])
        .await;
    assert_eq!(host.role(Some(&fresh)).await, (200, "Batch".into()));
}
