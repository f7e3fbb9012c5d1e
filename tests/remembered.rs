//! A connection's remembered credentials answer (`imds::remembered`): it is
//! what `respond` would answer, byte for byte, and it is given up the moment
//! any input of that answer changes. Each test asks as the server does:
//! the remembered answer first, else `respond`, keeping what it answers.

use std::net::IpAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::BodyExt;

use ec2metaproxy::broker::{Broker, Caller};
use ec2metaproxy::config::Config;
use ec2metaproxy::container::Process;
use ec2metaproxy::credentials::{CredentialCache, Timing};
use ec2metaproxy::imds::remembered::Remembered;
use ec2metaproxy::imds::token::TokenKey;
use ec2metaproxy::imds::{Imds, TOKEN_HEADER, TTL_HEADER};
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::mapping::StaticMappings;
use ec2metaproxy::reload::Live;
use ec2metaproxy::sys::ProcessWatch;

use crate::raw::{container, now, request, FakeSts};
use crate::reuse::SilentDocker;

const ADDRESS: &str = "10.78.0.2";
const UNKNOWN: &str = "10.78.0.99";
const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/Web";
const EXTENDED: &str = "/latest/meta-data/iam/security-credentials-extended/Web";

const CONFIG: &str = r#"{"aliasToARN": {"web": "arn:aws:iam::111111111111:role/Web"},
    "defaultAlias": "web", "metadataURL": null}"#;

/// Where an answer came from.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Source {
    Memory,
    Respond,
}

/// An answer, whole: status, headers and body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

struct Host {
    live: Live,
    docker: Arc<SilentDocker>,
    index: Arc<ContainerIndex>,
    credentials: Arc<CredentialCache>,
    sts: Arc<FakeSts>,
    imds: Imds,
    /// The connection's memory.
    memory: Remembered,
    /// The web container's init process.
    process: Child,
}

impl Host {
    async fn start(config: &str) -> Host {
        let process = Command::new("sleep").arg("30").spawn().unwrap();
        let watch = ProcessWatch::unchecked(process.id() as i32).unwrap();
        let web = container("web", ADDRESS, &[("ec2metaproxy.RoleAlias", "web")])
            .with_process(Process::Watched(Arc::new(watch)));
        let (docker, index) = SilentDocker::indexed(vec![web]).await;
        let sts = Arc::new(FakeSts::default());
        let credentials = Arc::new(CredentialCache::new(
            sts.clone(),
            Timing::for_duration(Duration::from_secs(3600)),
        ));
        let live = Live::new(Config::parse(config, "test.json").unwrap());
        let imds = Imds::new(
            Arc::new(Broker::new(
                index.clone(),
                credentials.clone(),
                live.roles(),
            )),
            live.imds_settings(),
            TokenKey::random(),
            live.config().metadata_source("us-east-1"),
        );
        Host {
            live,
            docker,
            index,
            credentials,
            sts,
            imds,
            memory: Remembered::default(),
            process,
        }
    }

    fn caller() -> IpAddr {
        ADDRESS.parse().unwrap()
    }

    /// As the server asks: the connection's memory, else `respond`.
    async fn ask(&self, path: &str, headers: &[(&str, &str)], at: SystemTime) -> (Source, Answer) {
        let parts = request("GET", path, headers);
        if let Some(mut hit) = self
            .imds
            .remembered(&self.memory, Self::caller(), &parts, at)
        {
            return (Source::Memory, answer(hit.take_response()).await);
        }
        let mut reply = self
            .imds
            .respond(&Caller::address(Self::caller()), &parts, at)
            .await;
        self.memory.keep(&mut reply);
        (Source::Respond, answer(reply.response).await)
    }

    /// What `respond` alone answers, with no memory involved.
    async fn respond(&self, path: &str, headers: &[(&str, &str)], at: SystemTime) -> Answer {
        let parts = request("GET", path, headers);
        answer(
            self.imds
                .respond(&Caller::address(Self::caller()), &parts, at)
                .await
                .response,
        )
        .await
    }

    async fn token(&self) -> String {
        let parts = request("PUT", "/latest/api/token", &[(TTL_HEADER, "600")]);
        let reply = self
            .imds
            .respond(&Caller::address(Self::caller()), &parts, now())
            .await;
        answer(reply.response).await.body
    }

    fn reload(&self, text: &str) {
        self.live.store(Config::parse(text, "test.json").unwrap());
    }

    /// Docker lists again (as after a missed event), and the index publishes.
    async fn relist(&self) {
        let before = self.index.generation();
        let _ = self.index.lookup(UNKNOWN.parse().unwrap()).await;
        assert_ne!(self.index.generation(), before, "the index published");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn answer(response: http::Response<http_body_util::Full<bytes::Bytes>>) -> Answer {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn minutes(n: u64) -> SystemTime {
    now() + Duration::from_secs(60 * n)
}

#[tokio::test]
async fn a_repeated_credentials_request_is_answered_from_memory_with_respond_s_bytes() {
    let host = Host::start(CONFIG).await;
    for path in [CREDENTIALS, EXTENDED] {
        let (from, first) = host.ask(path, &[], now()).await;
        assert_eq!((from, first.status), (Source::Respond, 200), "{path}");
        for _ in 0..3 {
            let (from, again) = host.ask(path, &[], now()).await;
            assert_eq!(from, Source::Memory, "{path}");
            assert_eq!(again, host.respond(path, &[], now()).await, "{path}");
        }
    }
    assert!(host
        .respond(EXTENDED, &[], now())
        .await
        .body
        .contains("\"AccountId\""));
    assert_eq!(
        host.sts.calls.lock().unwrap().len(),
        1,
        "one key, one AssumeRole"
    );
}

#[tokio::test]
async fn only_the_same_path_is_answered_from_memory() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    for (path, status) in [
        ("/latest/meta-data/iam/security-credentials/Other", 404),
        ("/latest/meta-data/iam/security-credentials/", 200),
        ("/latest/meta-data/iam/security-credentials/Web/", 200),
        ("/2016-09-02/meta-data/iam/security-credentials/Web", 200),
    ] {
        let (from, answer) = host.ask(path, &[], now()).await;
        assert_eq!((from, answer.status), (Source::Respond, status), "{path}");
    }
    let parts = request("POST", CREDENTIALS, &[]);
    assert!(host
        .imds
        .remembered(&host.memory, Host::caller(), &parts, now())
        .is_none());
}

#[tokio::test]
async fn a_reload_that_remaps_the_alias_is_answered_by_respond() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    // Same role name, another account: the path is the same, the role is not.
    host.reload(&CONFIG.replace("111111111111", "333333333333"));
    let (from, answer) = host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 200));
    let calls = host.sts.calls.lock().unwrap();
    assert_eq!(
        calls.last().unwrap().role_arn.as_str(),
        "arn:aws:iam::333333333333:role/Web"
    );
}

/// The alias map and the door's settings are separate cells, stored one
/// after the other on reload: a change to either one alone is seen.
#[tokio::test]
async fn a_new_snapshot_in_either_live_cell_is_answered_by_respond() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    let roles = host.live.roles();
    roles.store(Arc::new((**roles.load()).clone()));
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    let settings = host.live.imds_settings();
    settings.store(Arc::new((**settings.load()).clone()));
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
}

#[tokio::test]
async fn a_container_that_left_the_index_is_answered_by_respond() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    host.docker.running.lock().unwrap().clear();
    host.relist().await;
    let (from, answer) = host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 404));
}

#[tokio::test]
async fn any_index_change_is_answered_by_respond_once() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    // Another container came: this one's answer is the same, but the
    // memory cannot know that without asking again.
    host.docker
        .running
        .lock()
        .unwrap()
        .push(container("other", "10.78.0.3", &[]));
    host.relist().await;
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
}

#[tokio::test]
async fn a_container_whose_process_exited_is_answered_by_respond() {
    let mut host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    host.process.kill().unwrap();
    host.process.wait().unwrap();
    let (from, answer) = host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 404));
}

#[tokio::test]
async fn refreshed_credentials_replace_the_remembered_ones() {
    let host = Host::start(CONFIG).await;
    let (_, first) = host.ask(CREDENTIALS, &[], now()).await;
    // 35 minutes left: still served, from memory.
    let (from, later) = host.ask(CREDENTIALS, &[], minutes(25)).await;
    assert_eq!((from, &later), (Source::Memory, &first));
    // The background refresh fetches new ones (issued at +25 min).
    *host.sts.clock.lock().unwrap() = minutes(25);
    assert_eq!(host.credentials.refresh_due(minutes(25)).await, 0);
    let (from, refreshed) = host.ask(CREDENTIALS, &[], minutes(25)).await;
    assert_eq!(from, Source::Respond);
    assert_ne!(refreshed.body, first.body);
    assert_eq!(host.ask(CREDENTIALS, &[], minutes(25)).await.1, refreshed);
}

#[tokio::test]
async fn credentials_under_thirty_minutes_left_are_not_answered_from_memory() {
    let host = Host::start(CONFIG).await;
    let (_, first) = host.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(
        host.ask(CREDENTIALS, &[], minutes(29)).await.0,
        Source::Memory
    );
    *host.sts.clock.lock().unwrap() = minutes(31);
    let (from, fresh) = host.ask(CREDENTIALS, &[], minutes(31)).await;
    assert_eq!(from, Source::Respond);
    assert_ne!(fresh.body, first.body);
    assert_eq!(host.sts.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_forgotten_session_is_answered_by_respond() {
    let host = Host::start(CONFIG).await;
    host.ask(CREDENTIALS, &[], now()).await;
    let session = host.index.get(Host::caller()).unwrap().session_name.clone();
    host.credentials.forget_session(&session);
    assert_eq!(host.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(host.sts.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn token_refusals_are_left_to_respond() {
    let host = Host::start(&CONFIG.replacen('{', r#"{"requireToken": true, "#, 1)).await;
    let token = host.token().await;
    let (from, first) = host
        .ask(CREDENTIALS, &[(TOKEN_HEADER, &token)], now())
        .await;
    assert_eq!((from, first.status), (Source::Respond, 200));
    let (from, again) = host
        .ask(CREDENTIALS, &[(TOKEN_HEADER, &token)], now())
        .await;
    assert_eq!((from, again), (Source::Memory, first));
    let other = TokenKey::random().issue(
        ec2metaproxy::imds::token::Holder::new(Host::caller(), None),
        600,
        crate::raw::NOW_SECS,
    );
    for (headers, status) in [
        (vec![], 401),
        (vec![(TOKEN_HEADER, "not-a-token")], 401),
        (vec![(TOKEN_HEADER, other.as_str())], 401),
        (
            vec![
                (TOKEN_HEADER, token.as_str()),
                ("x-forwarded-for", "10.0.0.1"),
            ],
            403,
        ),
    ] {
        let (from, refused) = host.ask(CREDENTIALS, &headers, now()).await;
        assert_eq!(
            (from, refused.status),
            (Source::Respond, status),
            "{headers:?}"
        );
    }
    // The token's expiry is checked on each request too.
    let (from, expired) = host
        .ask(CREDENTIALS, &[(TOKEN_HEADER, &token)], minutes(11))
        .await;
    assert_eq!((from, expired.status), (Source::Respond, 401));
}

/// A static mapping's stand-in is not in the container index, so the
/// index's generation does not follow the mapping file: never remembered.
#[tokio::test]
async fn a_static_mapping_is_always_answered_by_respond() {
    let dir = std::env::temp_dir().join(format!("ec2mp-remembered-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mappings.json");
    std::fs::write(&file, r#"{"10.78.0.50": "web"}"#).unwrap();
    let mappings = Arc::new(StaticMappings::load(&file).unwrap());
    let live = Live::new(Config::parse(CONFIG, "test.json").unwrap());
    let broker = Broker::new(
        ContainerIndex::fixed(vec![]),
        Arc::new(CredentialCache::new(
            Arc::new(FakeSts::default()),
            Timing::for_duration(Duration::from_secs(3600)),
        )),
        live.roles(),
    )
    .with_static_mappings(mappings.clone());
    let imds = Imds::new(
        Arc::new(broker),
        live.imds_settings(),
        TokenKey::random(),
        live.config().metadata_source("us-east-1"),
    );
    let memory = Remembered::default();
    let caller: IpAddr = "10.78.0.50".parse().unwrap();
    let parts = request("GET", CREDENTIALS, &[]);
    for _ in 0..2 {
        assert!(imds.remembered(&memory, caller, &parts, now()).is_none());
        let mut reply = imds.respond(&Caller::address(caller), &parts, now()).await;
        assert_eq!(reply.response.status(), 200);
        memory.keep(&mut reply);
    }
    std::fs::write(&file, r#"{"10.78.0.50": "gone"}"#).unwrap();
    mappings.reload(&file);
    assert!(imds.remembered(&memory, caller, &parts, now()).is_none());
    assert_eq!(
        imds.respond(&Caller::address(caller), &parts, now())
            .await
            .response
            .status(),
        404
    );
    let _ = std::fs::remove_dir_all(&dir);
}
