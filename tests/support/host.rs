//! The one host harness: the proxy wired as `main` wires it (config, live
//! cells, container index, credential cache, broker, IMDS door), on the
//! fake Docker, STS and upstream metadata service, with containers that a
//! test names. Ask it in process ([`Host::send`], [`Host::respond`]) or
//! serve it on a loopback port ([`Host::listen`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;

use ec2metaproxy::broker::{spawn_prefetcher, Broker, Caller};
use ec2metaproxy::config::Config;
use ec2metaproxy::container::Container;
use ec2metaproxy::credentials::{CredentialCache, Timing};
use ec2metaproxy::health::{self, Readiness};
use ec2metaproxy::imds::token::{Holder, TokenKey};
use ec2metaproxy::imds::Imds;
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::mapping::StaticMappings;
use ec2metaproxy::reload::Live;
use ec2metaproxy::server::{serve, serve_all, Limits};

use super::docker::{container, synced, FakeDocker, InitProcess};
use super::exchange::{head, parse, Answer};
use super::sts::FakeSts;
use super::upstream::FakeUpstream;
use super::{ip, now, NOW_SECS};

/// Two roles and the fake upstream (`{upstream}` stands for its URL).
pub const TWO_ROLES: &str = r#"{
    "aliasToARN": {
        "default": "arn:aws:iam::111111111111:role/Default",
        "web": "arn:aws:iam::222222222222:role/team/Web"
    },
    "defaultAlias": "default",
    "metadataURL": "{upstream}"
}"#;

/// The standard host's containers: `web` labelled with the `web` alias,
/// `plain` with no label, `stray` with an alias the config does not have.
pub const WEB_IP: &str = "172.30.0.2";
pub const PLAIN_IP: &str = "172.30.0.3";
pub const STRAY_IP: &str = "172.30.0.4";
/// Where tests connect from, for a host served on a listener.
pub const LOOPBACK: &str = "127.0.0.1";

pub struct Host {
    pub imds: Arc<Imds>,
    pub broker: Arc<Broker>,
    pub live: Live,
    pub sts: Arc<FakeSts>,
    pub credentials: Arc<CredentialCache>,
    pub tokens: TokenKey,
    pub upstream: FakeUpstream,
    pub index: Arc<ContainerIndex>,
    docker: Option<Arc<FakeDocker>>,
    /// Containers' init processes, by container name.
    processes: Vec<(String, InitProcess)>,
}

/// What a [`Host`] is made of; [`HostBuilder::start`] makes it.
pub struct HostBuilder {
    config: String,
    overrides: Vec<String>,
    containers: Vec<Container>,
    /// Containers with a live init process.
    running: Vec<Container>,
    docker: bool,
    prefetching: bool,
    mappings: Option<Arc<StaticMappings>>,
    sts_clock: Option<SystemTime>,
}

impl Host {
    /// A host on `config` (a whole config file; `{upstream}` stands for the
    /// fake upstream's URL) with no containers and a fixed index.
    pub fn builder(config: &str) -> HostBuilder {
        HostBuilder {
            config: config.to_string(),
            overrides: Vec::new(),
            containers: Vec::new(),
            running: Vec::new(),
            docker: false,
            prefetching: false,
            mappings: None,
            sts_clock: None,
        }
    }

    /// [`TWO_ROLES`] and the `web`, `plain` and `stray` containers.
    pub fn standard() -> HostBuilder {
        Host::builder(TWO_ROLES).containers(vec![
            container("web", WEB_IP, &[("ec2metaproxy.RoleAlias", "web")]),
            container("plain", PLAIN_IP, &[]),
            container("stray", STRAY_IP, &[("ec2metaproxy.RoleAlias", "nope")]),
        ])
    }

    /// The fake Docker, for a host built with [`HostBuilder::docker`].
    pub fn docker(&self) -> &FakeDocker {
        self.docker
            .as_deref()
            .expect("a host with a fake Docker (HostBuilder::docker)")
    }

    /// The init process of the container `name` exits.
    pub fn exit(&mut self, name: &str) {
        let (_, process) = self
            .processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no running container {name}"));
        process.exit();
    }

    /// Docker lists again (as after a missed event), and the index publishes.
    pub async fn relist(&self) {
        let before = self.index.generation();
        let _ = self.index.lookup(ip("10.255.255.254")).await;
        assert_ne!(self.index.generation(), before, "the index published");
    }

    /// The ID of the container holding `caller`, to which the proxy binds
    /// its tokens.
    fn holder_id(&self, caller: &str) -> Option<String> {
        self.index.get(ip(caller)).map(|c| c.id.clone())
    }

    /// A token as the proxy would issue it to `caller` at `now`.
    pub fn token(&self, caller: &str, ttl: u64, now: u64) -> String {
        let id = self.holder_id(caller);
        self.tokens
            .issue(Holder::new(ip(caller), id.as_deref()), ttl, now)
    }

    /// A token for `caller`, valid for 10 minutes from the test clock.
    pub fn token_for(&self, caller: &str) -> String {
        self.token(caller, 600, NOW_SECS)
    }

    pub fn token_is_valid(&self, token: &str, caller: &str, now: u64) -> bool {
        let id = self.holder_id(caller);
        let holder = Holder::new(ip(caller), id.as_deref());
        self.tokens.is_valid(token.as_bytes(), holder, now)
    }

    /// Answers `text` (a request head as a spec writes it, `\n` between
    /// lines) from `caller` at the test clock, in process. Headers sorted.
    pub async fn send(&self, caller: &str, text: &str) -> Answer {
        let raw = head(text);
        let parts = parse(&raw).unwrap_or_else(|| panic!("not a request head: {text}"));
        self.respond(caller, &parts, now()).await.sorted()
    }

    /// Answers raw request bytes in process, as hyper would parse them;
    /// `None` when they do not parse (hyper answers those itself).
    pub async fn respond_raw(&self, caller: &str, raw: &[u8]) -> Option<Answer> {
        let parts = parse(raw)?;
        Some(self.respond(caller, &parts, now()).await)
    }

    /// `Imds::respond`, read whole.
    pub async fn respond(
        &self,
        caller: &str,
        parts: &http::request::Parts,
        at: SystemTime,
    ) -> Answer {
        let caller = Caller::address(ip(caller));
        Answer::of(self.imds.respond(&caller, parts, at).await.response).await
    }

    /// The proxy served on a loopback port as `main` serves it.
    pub async fn listen(&self, limits: Limits) -> Listening {
        listen(self.imds.clone(), limits).await
    }

    /// The proxy served on every address of `binds` at once (`"[::1]:0"`,
    /// ...), as `main` serves a `listen` list; `addrs` in the same order.
    pub async fn listen_all(&self, binds: &[&str]) -> ListeningAll {
        let mut listeners = Vec::new();
        for bind in binds {
            let listener = TcpListener::bind(bind)
                .await
                .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
            listeners.push(listener);
        }
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_all(
            listeners,
            self.imds.clone(),
            Limits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        ListeningAll { addrs, _stop: stop }
    }
}

/// Listeners served until this is dropped.
pub struct ListeningAll {
    pub addrs: Vec<SocketAddr>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HostBuilder {
    /// Top-level config keys that replace (or add to) the base config's:
    /// a JSON object such as `{"requireToken": true}`.
    pub fn set(mut self, overrides: &str) -> HostBuilder {
        self.overrides.push(overrides.to_string());
        self
    }

    pub fn container(mut self, container: Container) -> HostBuilder {
        self.containers.push(container);
        self
    }

    pub fn containers(mut self, containers: Vec<Container>) -> HostBuilder {
        self.containers.extend(containers);
        self
    }

    /// A container whose init process is a real process, which
    /// [`Host::exit`] ends.
    pub fn running(mut self, container: Container) -> HostBuilder {
        self.running.push(container);
        self
    }

    /// A container named `name` with the `web` alias on 127.0.0.1, where
    /// tests connect from.
    pub fn loopback(self, name: &str) -> HostBuilder {
        self.container(container(
            name,
            LOOPBACK,
            &[("ec2metaproxy.RoleAlias", "web")],
        ))
    }

    /// The containers run on the fake Docker and the index watches it
    /// (synced before `start` returns); without this the index is fixed.
    pub fn docker(mut self) -> HostBuilder {
        self.docker = true;
        self
    }

    /// The prefetcher runs, as in `main`, hearing of the containers of the
    /// fake Docker's first list.
    pub fn prefetching(mut self) -> HostBuilder {
        self.docker = true;
        self.prefetching = true;
        self
    }

    /// `roleMappingFile`'s addresses.
    pub fn mappings(mut self, mappings: Arc<StaticMappings>) -> HostBuilder {
        self.mappings = Some(mappings);
        self
    }

    /// STS issues credentials at `at` rather than at the test clock (for
    /// tests that ask at the wall clock's time).
    pub fn sts_issues_at(mut self, at: SystemTime) -> HostBuilder {
        self.sts_clock = Some(at);
        self
    }

    fn config(&self, upstream: &FakeUpstream) -> Config {
        let text = self.config.replace("{upstream}", &upstream.url());
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        for overrides in &self.overrides {
            let serde_json::Value::Object(keys) = serde_json::from_str(overrides).unwrap() else {
                panic!("overrides are a JSON object: {overrides}");
            };
            config.as_object_mut().unwrap().extend(keys);
        }
        Config::parse(&config.to_string(), "test.json").unwrap()
    }

    pub async fn start(self) -> Host {
        let upstream = FakeUpstream::start().await;
        let config = self.config(&upstream);
        let mut containers = self.containers;
        let mut processes = Vec::new();
        for running in self.running {
            let process = InitProcess::spawn();
            containers.push(running.clone().with_process(process.process()));
            processes.push((running.name, process));
        }
        let (docker, index, changes) = if self.docker {
            let docker = FakeDocker::new(containers);
            let index = ContainerIndex::watch(docker.clone());
            // Before the first list, as `main` subscribes.
            let changes = self.prefetching.then(|| index.subscribe());
            synced(&index).await;
            (Some(docker), index, changes)
        } else {
            (None, ContainerIndex::fixed(containers), None)
        };
        let sts = Arc::new(FakeSts::default());
        if let Some(at) = self.sts_clock {
            *sts.clock.lock().unwrap() = at;
        }
        let credentials = Arc::new(CredentialCache::new(
            sts.clone(),
            Timing::for_duration(config.fixed.session_duration),
        ));
        let tokens = TokenKey::random();
        let metadata = config.metadata_source("us-east-1");
        let live = Live::new(config);
        let mut broker = Broker::new(index.clone(), credentials.clone(), live.roles());
        if let Some(mappings) = self.mappings {
            broker = broker.with_static_mappings(mappings);
        }
        let broker = Arc::new(broker);
        if let Some(changes) = changes {
            spawn_prefetcher(broker.clone(), changes);
        }
        let imds = Arc::new(Imds::new(
            broker.clone(),
            live.imds_settings(),
            tokens.clone(),
            metadata,
        ));
        Host {
            imds,
            broker,
            live,
            sts,
            credentials,
            tokens,
            upstream,
            index,
            docker,
            processes,
        }
    }
}

/// A listener served on a loopback port. Sending on (or dropping) `stop`
/// starts its graceful shutdown; `server` ends after it.
pub struct Listening {
    pub addr: SocketAddr,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<()>,
}

/// Serves the IMDS door `imds` as `main` serves it.
pub async fn listen(imds: Arc<Imds>, limits: Limits) -> Listening {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, imds, limits, async {
        let _ = stopped.await;
    }));
    Listening { addr, stop, server }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on a loopback port, until the test ends.
pub async fn listen_health(readiness: Arc<dyn Readiness>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(health::serve(listener, readiness, std::future::pending()));
    addr
}
