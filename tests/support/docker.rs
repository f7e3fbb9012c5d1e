//! The one fake Docker: a list of running containers the test rewrites, no
//! event stream (as when Docker's events lag behind), and a switch that
//! makes it unreachable. Also the containers it runs, and live processes to
//! stand in for their init processes.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use ec2metaproxy::container::{Container, Process};
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::{ContainerSource, EventStream, PlatformError};
use ec2metaproxy::sys::ProcessWatch;

/// A container as Docker lists it: ID `{name}0123456789abcdef`, one address.
pub fn container(name: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
    Container::new(
        format!("{name}0123456789abcdef"),
        name,
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        vec![ip.parse().unwrap()],
    )
}

/// A Docker whose list the test rewrites and which sends no events.
pub struct FakeDocker {
    running: Mutex<Vec<Container>>,
    reachable: AtomicBool,
}

impl FakeDocker {
    /// A Docker running `containers`.
    pub fn new(containers: Vec<Container>) -> Arc<FakeDocker> {
        Arc::new(FakeDocker {
            running: Mutex::new(containers),
            reachable: AtomicBool::new(true),
        })
    }

    /// A Docker that refuses every connection.
    pub fn unreachable() -> Arc<FakeDocker> {
        let docker = FakeDocker::new(vec![]);
        docker.reachable.store(false, Ordering::SeqCst);
        docker
    }

    /// Docker starts `container` (and tells nobody).
    pub fn run(&self, container: Container) {
        self.running.lock().unwrap().push(container);
    }

    /// Docker gives `next` the addresses of whoever held them (and tells nobody).
    pub fn hand_over(&self, next: Container) {
        let mut running = self.running.lock().unwrap();
        running.retain(|c| c.ips != next.ips);
        running.push(next);
    }

    /// Every container stops (and Docker tells nobody).
    pub fn stop_all(&self) {
        self.running.lock().unwrap().clear();
    }

    fn refused() -> PlatformError {
        PlatformError::Other("connection refused".into())
    }

    fn check(&self) -> Result<(), PlatformError> {
        if self.reachable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(FakeDocker::refused())
        }
    }
}

/// Waits (without sleeping) until the index's watcher has applied its
/// first list: the fake answers at once, so a few turns of the runtime do.
pub async fn synced(index: &ContainerIndex) {
    for _ in 0..10_000 {
        if index.is_synced() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("index never synced");
}

#[async_trait]
impl ContainerSource for FakeDocker {
    async fn connect(&self) -> Result<(), PlatformError> {
        self.check()
    }
    async fn list(&self) -> Result<Vec<Container>, PlatformError> {
        self.check()?;
        Ok(self.running.lock().unwrap().clone())
    }
    async fn inspect(&self, id: &str) -> Result<Option<Container>, PlatformError> {
        self.check()?;
        let running = self.running.lock().unwrap();
        Ok(running.iter().find(|c| c.id == id).cloned())
    }
    fn events(&self) -> EventStream {
        Box::pin(futures_util::stream::pending())
    }
    fn describe(&self) -> String {
        "fake Docker".into()
    }
}

/// A real process standing in for a container's init process, so that the
/// kernel (a pidfd) can say when it exits. Killed when dropped.
pub struct InitProcess {
    child: Child,
    process: Process,
}

impl InitProcess {
    pub fn spawn() -> InitProcess {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let watch = ProcessWatch::unchecked(child.id() as i32).unwrap();
        InitProcess {
            child,
            process: Process::Watched(Arc::new(watch)),
        }
    }

    /// What the container's model holds.
    pub fn process(&self) -> Process {
        self.process.clone()
    }

    /// The process exits (and is reaped).
    pub fn exit(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for InitProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
