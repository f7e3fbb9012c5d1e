//! A connection's remembered credentials answer (`imds::remembered`): it is
//! what `respond` would answer, byte for byte, and it is given up the moment
//! any input of that answer changes. Each test asks as the server does:
//! the remembered answer first, else `respond`, keeping what it answers.
//! Tests that make the container index list again or wait for an
//! address's next owner run on tokio's paused clock: those waits (up to
//! 600 ms each) take no real time.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ec2metaproxy::broker::Caller;
use ec2metaproxy::config::Config;
use ec2metaproxy::imds::remembered::Remembered;
use ec2metaproxy::imds::token::{Holder, TokenKey};
use ec2metaproxy::imds::{TOKEN_HEADER, TTL_HEADER};
use ec2metaproxy::platform::mapping::StaticMappings;

use crate::support::docker::container;
use crate::support::exchange::{request, Answer};
use crate::support::host::{Host, HostBuilder};
use crate::support::{ip, now, NOW_SECS};

const ADDRESS: &str = "10.78.0.2";
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

/// A host where the `web` container, with a live process, holds ADDRESS,
/// on a Docker that sends no events.
fn web_host() -> HostBuilder {
    Host::builder(CONFIG)
        .running(container(
            "web",
            ADDRESS,
            &[("ec2metaproxy.RoleAlias", "web")],
        ))
        .docker()
}

/// The web container's connection to the host, with its memory.
struct Connection {
    host: Host,
    memory: Remembered,
}

impl Connection {
    async fn open(host: HostBuilder) -> Connection {
        Connection {
            host: host.start().await,
            memory: Remembered::default(),
        }
    }

    fn caller() -> IpAddr {
        ip(ADDRESS)
    }

    /// As the server asks: the connection's memory, else `respond`.
    async fn ask(&self, path: &str, headers: &[(&str, &str)], at: SystemTime) -> (Source, Answer) {
        let parts = request("GET", path, headers);
        let imds = &self.host.imds;
        if let Some(mut hit) = imds.remembered(&self.memory, Self::caller(), &parts, at) {
            return (Source::Memory, Answer::of(hit.take_response()).await);
        }
        let mut reply = imds
            .respond(&Caller::address(Self::caller()), &parts, at)
            .await;
        self.memory.keep(&mut reply);
        (Source::Respond, Answer::of(reply.response).await)
    }

    /// What `respond` alone answers, with no memory involved.
    async fn respond(&self, path: &str, headers: &[(&str, &str)], at: SystemTime) -> Answer {
        self.host
            .respond(ADDRESS, &request("GET", path, headers), at)
            .await
    }

    async fn token(&self) -> String {
        let parts = request("PUT", "/latest/api/token", &[(TTL_HEADER, "600")]);
        self.host.respond(ADDRESS, &parts, now()).await.body
    }

    fn reload(&self, text: &str) {
        self.host
            .live
            .store(Config::parse(text, "test.json").unwrap());
    }
}

fn minutes(n: u64) -> SystemTime {
    now() + Duration::from_secs(60 * n)
}

#[tokio::test]
async fn a_repeated_credentials_request_is_answered_from_memory_with_respond_s_bytes() {
    let c = Connection::open(web_host()).await;
    for path in [CREDENTIALS, EXTENDED] {
        let (from, first) = c.ask(path, &[], now()).await;
        assert_eq!((from, first.status), (Source::Respond, 200), "{path}");
        for _ in 0..3 {
            let (from, again) = c.ask(path, &[], now()).await;
            assert_eq!(from, Source::Memory, "{path}");
            assert_eq!(again, c.respond(path, &[], now()).await, "{path}");
        }
    }
    assert!(c
        .respond(EXTENDED, &[], now())
        .await
        .body
        .contains("\"AccountId\""));
    assert_eq!(
        c.host.sts.calls.lock().unwrap().len(),
        1,
        "one key, one AssumeRole"
    );
}

#[tokio::test]
async fn only_the_same_path_is_answered_from_memory() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    for (path, status) in [
        ("/latest/meta-data/iam/security-credentials/Other", 404),
        ("/latest/meta-data/iam/security-credentials/", 200),
        ("/latest/meta-data/iam/security-credentials/Web/", 200),
        ("/2016-09-02/meta-data/iam/security-credentials/Web", 200),
    ] {
        let (from, answer) = c.ask(path, &[], now()).await;
        assert_eq!((from, answer.status), (Source::Respond, status), "{path}");
    }
    let parts = request("POST", CREDENTIALS, &[]);
    assert!(c
        .host
        .imds
        .remembered(&c.memory, Connection::caller(), &parts, now())
        .is_none());
}

#[tokio::test]
async fn a_reload_that_remaps_the_alias_is_answered_by_respond() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    // Same role name, another account: the path is the same, the role is not.
    c.reload(&CONFIG.replace("111111111111", "333333333333"));
    let (from, answer) = c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 200));
    let calls = c.host.sts.calls.lock().unwrap();
    assert_eq!(
        calls.last().unwrap().role_arn.as_str(),
        "arn:aws:iam::333333333333:role/Web"
    );
}

/// The alias map and the door's settings are separate cells, stored one
/// after the other on reload: a change to either one alone is seen.
#[tokio::test]
async fn a_new_snapshot_in_either_live_cell_is_answered_by_respond() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    let roles = c.host.live.roles();
    roles.store(Arc::new((**roles.load()).clone()));
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    let settings = c.host.live.imds_settings();
    settings.store(Arc::new((**settings.load()).clone()));
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
}

#[tokio::test(start_paused = true)]
async fn a_container_that_left_the_index_is_answered_by_respond() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    c.host.docker().stop_all();
    c.host.relist().await;
    let (from, answer) = c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 404));
}

#[tokio::test(start_paused = true)]
async fn any_index_change_is_answered_by_respond_once() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    // Another container came: this one's answer is the same, but the
    // memory cannot know that without asking again.
    c.host.docker().run(container("other", "10.78.0.3", &[]));
    c.host.relist().await;
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
}

#[tokio::test(start_paused = true)]
async fn a_container_whose_process_exited_is_answered_by_respond() {
    let mut c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Memory);
    c.host.exit("web");
    let (from, answer) = c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!((from, answer.status), (Source::Respond, 404));
}

#[tokio::test]
async fn refreshed_credentials_replace_the_remembered_ones() {
    let c = Connection::open(web_host()).await;
    let (_, first) = c.ask(CREDENTIALS, &[], now()).await;
    // 35 minutes left: still served, from memory.
    let (from, later) = c.ask(CREDENTIALS, &[], minutes(25)).await;
    assert_eq!((from, &later), (Source::Memory, &first));
    // The background refresh fetches new ones (issued at +25 min).
    *c.host.sts.clock.lock().unwrap() = minutes(25);
    assert_eq!(c.host.credentials.refresh_due(minutes(25)).await, 0);
    let (from, refreshed) = c.ask(CREDENTIALS, &[], minutes(25)).await;
    assert_eq!(from, Source::Respond);
    assert_ne!(refreshed.body, first.body);
    assert_eq!(c.ask(CREDENTIALS, &[], minutes(25)).await.1, refreshed);
}

#[tokio::test]
async fn credentials_under_thirty_minutes_left_are_not_answered_from_memory() {
    let c = Connection::open(web_host()).await;
    let (_, first) = c.ask(CREDENTIALS, &[], now()).await;
    assert_eq!(c.ask(CREDENTIALS, &[], minutes(29)).await.0, Source::Memory);
    *c.host.sts.clock.lock().unwrap() = minutes(31);
    let (from, fresh) = c.ask(CREDENTIALS, &[], minutes(31)).await;
    assert_eq!(from, Source::Respond);
    assert_ne!(fresh.body, first.body);
    assert_eq!(c.host.sts.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_forgotten_session_is_answered_by_respond() {
    let c = Connection::open(web_host()).await;
    c.ask(CREDENTIALS, &[], now()).await;
    let session = c
        .host
        .index
        .get(Connection::caller())
        .unwrap()
        .session_name
        .clone();
    c.host.credentials.forget_session(&session);
    assert_eq!(c.ask(CREDENTIALS, &[], now()).await.0, Source::Respond);
    assert_eq!(c.host.sts.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn token_refusals_are_left_to_respond() {
    let c = Connection::open(web_host().set(r#"{"requireToken": true}"#)).await;
    let token = c.token().await;
    let (from, first) = c.ask(CREDENTIALS, &[(TOKEN_HEADER, &token)], now()).await;
    assert_eq!((from, first.status), (Source::Respond, 200));
    let (from, again) = c.ask(CREDENTIALS, &[(TOKEN_HEADER, &token)], now()).await;
    assert_eq!((from, again), (Source::Memory, first));
    let other = TokenKey::random().issue(Holder::new(Connection::caller(), None), 600, NOW_SECS);
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
        let (from, refused) = c.ask(CREDENTIALS, &headers, now()).await;
        assert_eq!(
            (from, refused.status),
            (Source::Respond, status),
            "{headers:?}"
        );
    }
    // The token's expiry is checked on each request too.
    let (from, expired) = c
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
    let host = Host::builder(CONFIG)
        .mappings(mappings.clone())
        .start()
        .await;
    let imds = &host.imds;
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
