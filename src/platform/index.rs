//! The container index: which running container owns a source IP.
//!
//! One task (the watcher) owns all writes. It builds the index from one list
//! at start, applies the Docker event stream, resyncs with a full list after
//! the stream breaks, and answers the request path's "I do not know this IP"
//! with a rate-limited list. Readers only load an `Arc` snapshot: a request
//! never waits on a lock that Docker I/O holds.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{short, ContainerEvent, ContainerSource, PlatformError};
use crate::container::{Container, Process};

/// How long a container may ask before its `start` event arrives and still
/// find itself: the miss path lists Docker at most this often.
const MIN_LIST_INTERVAL: Duration = Duration::from_millis(100);
/// How long the request path waits for a miss refresh. SDKs give IMDS about a second.
const MISS_WAIT: Duration = Duration::from_millis(600);
/// An IP that is still unknown after a refresh is answered from memory for
/// this long, so a non-container caller cannot make the proxy list Docker in a loop.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// A created container not started within this long no longer keeps
/// misses from being remembered (`docker create` without a start).
const CREATE_PENDING: Duration = Duration::from_secs(10);
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

type IpMap = crate::FastHashMap<IpAddr, Arc<Container>>;

struct RefreshRequest {
    asked_at: Instant,
    /// A container whose process the request path saw exit: drop it now.
    exited: Option<String>,
    done: oneshot::Sender<()>,
}

/// The shared, read-mostly view of containers by IP.
pub struct ContainerIndex {
    by_ip: ArcSwap<IpMap>,
    /// Bumped after every publish: an answer computed while it had one value
    /// still holds while it has that value (see `imds::remembered`).
    generation: AtomicU64,
    refresh: Option<mpsc::Sender<RefreshRequest>>,
    unknown: Mutex<HashMap<IpAddr, Instant>>,
    /// Containers created and not yet started: while any are, a miss is not
    /// remembered, since the address may be theirs in a moment.
    pending_creates: AtomicUsize,
    synced: AtomicBool,
    /// Woken on every publish, for lookups waiting on an address.
    changed: tokio::sync::Notify,
    /// Containers that appeared or went, for prefetching and cache cleanup.
    changes: broadcast::Sender<IndexChange>,
}

/// A container that appeared in (or changed in) the index, or left it.
#[derive(Debug, Clone)]
pub enum IndexChange {
    Up(Arc<Container>),
    Gone(Arc<Container>),
}

/// Changes queued for a slow subscriber before the oldest are dropped.
const CHANGES_BUFFER: usize = 4096;

impl ContainerIndex {
    /// An index that never changes: for tests and for callers without a platform.
    pub fn fixed(containers: Vec<Container>) -> Arc<ContainerIndex> {
        let index = ContainerIndex {
            by_ip: ArcSwap::from_pointee(IpMap::default()),
            generation: AtomicU64::new(0),
            refresh: None,
            unknown: Mutex::new(HashMap::new()),
            pending_creates: AtomicUsize::new(0),
            synced: AtomicBool::new(true),
            changed: tokio::sync::Notify::new(),
            changes: broadcast::channel(1).0,
        };
        index.publish(
            &containers
                .into_iter()
                .map(|c| (c.id.clone(), Arc::new(c)))
                .collect(),
        );
        Arc::new(index)
    }

    /// Starts the watcher task for `source` and returns the index it keeps current.
    pub fn watch(source: Arc<dyn ContainerSource>) -> Arc<ContainerIndex> {
        let (tx, rx) = mpsc::channel(256);
        let index = Arc::new(ContainerIndex {
            by_ip: ArcSwap::from_pointee(IpMap::default()),
            generation: AtomicU64::new(0),
            refresh: Some(tx),
            unknown: Mutex::new(HashMap::new()),
            pending_creates: AtomicUsize::new(0),
            synced: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            changes: broadcast::channel(CHANGES_BUFFER).0,
        });
        // The task holds a weak reference so dropping the index stops it.
        let weak = Arc::downgrade(&index);
        tokio::spawn(async move {
            let (inspected_tx, inspected_rx) = mpsc::channel(4);
            Watcher {
                source,
                index: weak,
                refresh_rx: rx,
                inspected_tx,
                inspected_rx,
                by_id: HashMap::new(),
                published: HashMap::new(),
                last_list: None,
                exited: HashSet::new(),
                inspections: tokio::task::JoinSet::new(),
                inspect_slots: Arc::new(tokio::sync::Semaphore::new(INSPECT_CONCURRENCY)),
                event_seq: 0,
                order: HashMap::new(),
                creating: HashMap::new(),
            }
            .run()
            .await
        });
        index
    }

    /// Changes whenever any address's container may have changed. Read it
    /// before [`get`](Self::get): a later equal value means that lookup
    /// would still find the same container.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The container at `ip` as of the last change seen. The hot path.
    pub fn get(&self, ip: IpAddr) -> Option<Arc<Container>> {
        self.by_ip.load().get(&ip).cloned()
    }

    /// Like [`get`](Self::get), but an unknown IP first waits for one
    /// rate-limited refresh, so a container that asks in its first
    /// milliseconds (before its start event) is found.
    pub async fn lookup(&self, ip: IpAddr) -> Option<Arc<Container>> {
        if let Some(container) = self.get(ip) {
            return Some(container);
        }
        let refresh = self.refresh.as_ref()?;
        let now = Instant::now();
        {
            let unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            if unknown
                .get(&ip)
                .is_some_and(|at| now.duration_since(*at) < NEGATIVE_TTL)
            {
                return None;
            }
        }
        let deadline = tokio::time::Instant::from_std(now + MISS_WAIT);
        let (done, wait) = oneshot::channel();
        let request = RefreshRequest {
            asked_at: now,
            exited: None,
            done,
        };
        if refresh.try_send(request).is_ok() {
            let _ = tokio::time::timeout_at(deadline, wait).await;
        }
        // Docker can show a new address in the container before its API does
        // (`network connect`): keep waiting for the event until the deadline.
        let found = self.wait_for_owner(ip, deadline).await;
        if found.is_none() && self.pending_creates.load(Ordering::Acquire) == 0 {
            let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
            unknown.retain(|_, at| now.duration_since(*at) < NEGATIVE_TTL);
            unknown.insert(ip, now);
        }
        found
    }

    /// The container at `ip`, now that `exited` (which the index still has
    /// there) is known from the kernel to have exited: the watcher drops it at
    /// once, and this waits, as [`lookup`](Self::lookup) does, for the
    /// address's next owner to show up.
    pub async fn lookup_after_exit(
        &self,
        ip: IpAddr,
        exited: &Container,
    ) -> Option<Arc<Container>> {
        let refresh = self.refresh.as_ref()?;
        let now = Instant::now();
        let deadline = tokio::time::Instant::from_std(now + MISS_WAIT);
        let (done, wait) = oneshot::channel();
        let request = RefreshRequest {
            asked_at: now,
            exited: Some(exited.id.clone()),
            done,
        };
        if refresh.try_send(request).is_ok() {
            let _ = tokio::time::timeout_at(deadline, wait).await;
        }
        self.wait_for_owner(ip, deadline).await
    }

    /// The container at `ip` once its process is known. Containers taken
    /// from a list are inspected in the background; a request that needs
    /// the process (to prove its connection) waits for that, at most as
    /// long as a miss waits.
    pub async fn inspected(&self, ip: IpAddr) -> Option<Arc<Container>> {
        if self.refresh.is_none() {
            // A fixed index: nothing will ever inspect its containers.
            return self.get(ip);
        }
        let deadline = tokio::time::Instant::now() + MISS_WAIT;
        loop {
            let changed = self.changed.notified();
            let current = self.get(ip);
            if current
                .as_ref()
                .is_none_or(|c| c.process != Process::NotInspected)
            {
                return current;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.get(ip);
            }
        }
    }

    /// Waits until `ip` belongs to a container whose process has not
    /// exited, or until `deadline`.
    async fn wait_for_owner(
        &self,
        ip: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Container>> {
        loop {
            let changed = self.changed.notified();
            let owner = self.get(ip).filter(|c| !c.has_exited());
            if owner.is_some() {
                return owner;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.get(ip).filter(|c| !c.has_exited());
            }
        }
    }

    /// Containers appearing and leaving from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<IndexChange> {
        self.changes.subscribe()
    }

    /// Number of container addresses indexed.
    pub fn len(&self) -> usize {
        self.by_ip.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the first full list has been applied.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn publish(&self, by_id: &HashMap<String, Arc<Container>>) {
        let mut by_ip = IpMap::with_capacity_and_hasher(by_id.len(), Default::default());
        let mut contested = Vec::new();
        for container in by_id.values() {
            for ip in &container.ips {
                if let Some(other) = by_ip.insert(*ip, container.clone()) {
                    // Docker can briefly report a dead container beside the new
                    // owner of its address; refuse both rather than guess.
                    log::warn!(
                        "address {ip} is claimed by containers {} and {}; serving neither until Docker settles",
                        other.short_id(),
                        container.short_id()
                    );
                    contested.push(*ip);
                }
            }
        }
        for ip in contested {
            by_ip.remove(&ip);
        }
        crate::metrics::metrics().containers.set(by_ip.len() as i64);
        self.by_ip.store(Arc::new(by_ip));
        self.generation.fetch_add(1, Ordering::Release);
        self.forget_misses();
        self.changed.notify_waiters();
    }

    fn forget_misses(&self) {
        self.unknown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

type Inspected = (String, Result<Option<Container>, PlatformError>);

/// Inspections in flight at once, for a list and for events alike.
const INSPECT_CONCURRENCY: usize = 16;

/// An inspection an event asked for, with the event's place in the stream.
struct EventInspected {
    id: String,
    seq: u64,
    result: Result<Option<Container>, PlatformError>,
}

/// Per container with event inspections in flight: the newest event whose
/// outcome was applied, so an older inspection finishing late is dropped.
#[derive(Default)]
struct Order {
    applied: u64,
    in_flight: usize,
}

struct Watcher {
    source: Arc<dyn ContainerSource>,
    index: std::sync::Weak<ContainerIndex>,
    refresh_rx: mpsc::Receiver<RefreshRequest>,
    /// Background inspections of listed containers, to learn their processes.
    inspected_tx: mpsc::Sender<Vec<Inspected>>,
    inspected_rx: mpsc::Receiver<Vec<Inspected>>,
    by_id: HashMap<String, Arc<Container>>,
    /// `by_id` as last published, to tell subscribers what changed.
    published: HashMap<String, Arc<Container>>,
    last_list: Option<Instant>,
    /// Containers whose process the kernel saw exit while Docker may still
    /// list them as running: not indexed again unless a new inspect finds a
    /// live process (a restart keeps the ID).
    exited: HashSet<String>,
    /// Inspections that events asked for, run side by side so one slow
    /// inspect never holds up the containers behind it in a burst.
    inspections: tokio::task::JoinSet<EventInspected>,
    inspect_slots: Arc<tokio::sync::Semaphore>,
    /// Position in the event stream, to apply each container's events in order.
    event_seq: u64,
    order: HashMap<String, Order>,
    /// Created, not yet started, with when the create was seen.
    creating: HashMap<String, Instant>,
}

impl Watcher {
    async fn run(mut self) {
        let mut backoff = RECONNECT_MIN;
        let mut first = true;
        loop {
            if self.index.strong_count() == 0 {
                return;
            }
            // Subscribe before listing so nothing between the two is missed.
            if let Err(error) = self.source.connect().await {
                log::error!("{error}; retrying in {backoff:?}");
                self.wait_answering_requests(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
            let mut events = self.source.events();
            match self.list().await {
                Ok(count) => {
                    let verb = if first { "indexed" } else { "resynced" };
                    log::info!(
                        "{verb} {count} running containers from {}",
                        self.source.describe()
                    );
                    first = false;
                    backoff = RECONNECT_MIN;
                    if let Some(index) = self.index.upgrade() {
                        index.synced.store(true, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    log::error!("{error}; retrying in {backoff:?}");
                    self.wait_answering_requests(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            }
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => self.apply(event),
                        Some(Err(error)) => {
                            log::warn!("Docker event stream broke: {error}; resyncing");
                            break;
                        }
                        None => {
                            log::warn!("Docker event stream ended; resyncing");
                            break;
                        }
                    },
                    request = self.refresh_rx.recv() => match request {
                        Some(request) => self.refresh(request).await,
                        None => return,
                    },
                    Some(inspected) = self.inspected_rx.recv() => self.complete(inspected),
                    Some(joined) = self.inspections.join_next(), if !self.inspections.is_empty() => {
                        match joined {
                            Ok(inspected) => self.inspected(inspected),
                            Err(error) => log::warn!("a container inspection failed: {error}"),
                        }
                    }
                }
            }
            crate::metrics::metrics().event_stream_reconnects.inc();
            if let Some(index) = self.index.upgrade() {
                index.synced.store(false, Ordering::Relaxed);
            }
            self.wait_answering_requests(backoff).await;
        }
    }

    /// Sleeps before a reconnect while still answering miss refreshes (they
    /// cannot succeed, so they are released at once instead of timing out).
    async fn wait_answering_requests(&mut self, delay: Duration) {
        let deadline = tokio::time::sleep(delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                request = self.refresh_rx.recv() => match request {
                    Some(request) => { let _ = request.done.send(()); }
                    None => return,
                },
            }
        }
    }

    async fn list(&mut self) -> Result<usize, PlatformError> {
        self.last_list = Some(Instant::now());
        let listed = self.source.list().await?;
        let complete = self.source.list_is_complete();
        let mut by_id = HashMap::with_capacity(listed.len());
        let mut to_inspect = Vec::new();
        let mut still_listed = HashSet::new();
        for container in listed {
            // Docker can list a container for a while after its process has
            // exited; the kernel knows better.
            if container.has_exited()
                || self
                    .by_id
                    .get(&container.id)
                    .is_some_and(|known| known.has_exited())
            {
                self.exited.insert(container.id.clone());
            }
            if self.exited.contains(&container.id) {
                still_listed.insert(container.id.clone());
                if !complete {
                    // Only an inspect can tell a restart (a new process) apart.
                    to_inspect.push(container.id);
                }
                continue;
            }
            match self.by_id.get(&container.id) {
                // Keep what inspect taught us, unless the listing changed.
                Some(known)
                    if !complete
                        && known.process != Process::NotInspected
                        && known.ips == container.ips
                        && known.name == container.name
                        && known.labels == container.labels =>
                {
                    by_id.insert(container.id.clone(), known.clone());
                }
                _ => {
                    if !complete {
                        to_inspect.push(container.id.clone());
                    }
                    by_id.insert(container.id.clone(), Arc::new(container));
                }
            }
        }
        self.exited.retain(|id| still_listed.contains(id));
        self.by_id = by_id;
        self.publish();
        if !to_inspect.is_empty() {
            self.inspect_in_background(to_inspect);
        }
        Ok(self.by_id.len())
    }

    /// Listed containers are served at once; their processes are learnt
    /// here, without holding up events or misses.
    fn inspect_in_background(&self, ids: Vec<String>) {
        let source = self.source.clone();
        let done = self.inspected_tx.clone();
        tokio::spawn(async move {
            let inspected = futures_util::stream::iter(ids)
                .map(|id| {
                    let source = source.clone();
                    async move {
                        let result = source.inspect(&id).await;
                        (id, result)
                    }
                })
                .buffer_unordered(INSPECT_CONCURRENCY)
                .collect()
                .await;
            let _ = done.send(inspected).await;
        });
    }

    /// Applies background inspections to the containers still listed as
    /// they were (an event may have brought newer news meanwhile).
    fn complete(&mut self, inspected: Vec<Inspected>) {
        let mut changed = false;
        for (id, result) in inspected {
            if self.exited.contains(&id) {
                // Back only with a new, live process.
                if let Ok(Some(container)) = result {
                    if matches!(container.process, Process::Watched(_)) && !container.has_exited() {
                        self.exited.remove(&id);
                        self.by_id.insert(id, Arc::new(container));
                        changed = true;
                    }
                }
                continue;
            }
            let Some(listed) = self.by_id.get(&id) else {
                continue;
            };
            if listed.process != Process::NotInspected {
                continue;
            }
            match result {
                Ok(Some(container)) => {
                    self.by_id.insert(id, Arc::new(container));
                    changed = true;
                }
                Ok(None) => {
                    self.by_id.remove(&id);
                    changed = true;
                }
                Err(error) => log::debug!("cannot inspect container {}: {error}", short(&id)),
            }
        }
        if changed {
            self.publish();
        }
    }

    async fn refresh(&mut self, first: RefreshRequest) {
        // Before the asker decides whether to remember its miss.
        let now = Instant::now();
        let before = self.creating.len();
        self.creating
            .retain(|_, at| now.duration_since(*at) < CREATE_PENDING);
        if self.creating.len() != before {
            self.count_creating();
        }
        let mut waiting = vec![first];
        while let Ok(more) = self.refresh_rx.try_recv() {
            waiting.push(more);
        }
        let mut dropped = false;
        for id in waiting.iter().filter_map(|r| r.exited.as_ref()) {
            if self.by_id.get(id).is_some_and(|c| c.has_exited()) {
                log::debug!("container {}'s process has exited", short(id));
                self.by_id.remove(id);
                self.exited.insert(id.clone());
                dropped = true;
            }
        }
        if dropped {
            self.publish();
        }
        let newest_ask = waiting.iter().map(|r| r.asked_at).max().expect("non-empty");
        let stale = self.last_list.is_none_or(|at| at < newest_ask);
        if stale {
            if let Some(last) = self.last_list {
                let since = last.elapsed();
                if since < MIN_LIST_INTERVAL {
                    tokio::time::sleep(MIN_LIST_INTERVAL - since).await;
                }
            }
            if let Err(error) = self.list().await {
                log::warn!("refresh for an unknown address failed: {error}");
            }
        }
        for request in waiting {
            let _ = request.done.send(());
        }
    }

    fn apply(&mut self, event: ContainerEvent) {
        self.event_seq += 1;
        let seq = self.event_seq;
        match event {
            ContainerEvent::Gone(id) => {
                self.not_creating(&id);
                // Inspections started before this event must not bring it back.
                if let Some(order) = self.order.get_mut(&id) {
                    order.applied = seq;
                }
                if self.by_id.remove(&id).is_some() {
                    log::debug!("container {} is gone", short(&id));
                    self.publish();
                }
            }
            ContainerEvent::Created(id) => {
                let now = Instant::now();
                self.creating
                    .retain(|_, at| now.duration_since(*at) < CREATE_PENDING);
                self.creating.insert(id, now);
                self.count_creating();
            }
            ContainerEvent::Changed(id) => {
                // A network connect comes before the start: the address is
                // about to be taken, so no miss for it should be remembered.
                if let Some(index) = self.index.upgrade() {
                    index.forget_misses();
                }
                self.order.entry(id.clone()).or_default().in_flight += 1;
                let source = self.source.clone();
                let slots = self.inspect_slots.clone();
                self.inspections.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let result = source.inspect(&id).await;
                    EventInspected { id, seq, result }
                });
            }
        }
    }

    /// Applies an event's inspection unless a newer event for the same
    /// container has already been applied.
    fn inspected(&mut self, inspected: EventInspected) {
        let EventInspected { id, seq, result } = inspected;
        let order = self.order.entry(id.clone()).or_default();
        order.in_flight = order.in_flight.saturating_sub(1);
        let stale = seq < order.applied;
        if !stale {
            order.applied = seq;
        }
        if order.in_flight == 0 {
            self.order.remove(&id);
        }
        if stale {
            return;
        }
        match result {
            Ok(Some(container)) if !container.has_exited() => {
                self.exited.remove(&id);
                self.not_creating(&id);
                log::debug!(
                    "container {} ({}) at {:?}",
                    container.short_id(),
                    container.name,
                    container.ips
                );
                self.by_id.insert(id, Arc::new(container));
                self.publish();
            }
            Ok(_) => {
                if self.by_id.remove(&id).is_some() {
                    self.publish();
                }
            }
            Err(error) => log::warn!("cannot inspect container {}: {error}", short(&id)),
        }
    }

    fn not_creating(&mut self, id: &str) {
        if self.creating.remove(id).is_some() {
            self.count_creating();
        }
    }

    fn count_creating(&self) {
        if let Some(index) = self.index.upgrade() {
            index
                .pending_creates
                .store(self.creating.len(), Ordering::Release);
        }
    }

    fn publish(&mut self) {
        let Some(index) = self.index.upgrade() else {
            return;
        };
        index.publish(&self.by_id);
        for (id, container) in &self.by_id {
            let known = self.published.get(id);
            if known.is_none_or(|old| **old != **container) {
                let _ = index.changes.send(IndexChange::Up(container.clone()));
            }
        }
        for (id, container) in &self.published {
            if !self.by_id.contains_key(id) {
                let _ = index.changes.send(IndexChange::Gone(container.clone()));
            }
        }
        self.published = self.by_id.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::StringMap;
    use crate::platform::EventStream;
    use crate::sys::ProcessWatch;
    use async_trait::async_trait;
    use futures_util::Stream;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc::UnboundedSender;

    fn container(id: &str, ip: &str) -> Container {
        Container::new(
            id.into(),
            id,
            StringMap::default(),
            vec![ip.parse().unwrap()],
        )
    }

    /// A platform whose containers and events the test controls, counting lists.
    struct FakeSource {
        running: Mutex<Vec<Container>>,
        events: Mutex<Option<mpsc::UnboundedReceiver<Result<ContainerEvent, PlatformError>>>>,
        lists: AtomicUsize,
        inspects: AtomicUsize,
        /// Lists without processes, as Docker's list API does.
        incomplete: bool,
        /// Containers whose inspect answers this late (as Docker had them
        /// when asked).
        slow: Mutex<HashMap<String, Duration>>,
    }

    impl FakeSource {
        fn new(
            running: Vec<Container>,
        ) -> (
            Arc<FakeSource>,
            UnboundedSender<Result<ContainerEvent, PlatformError>>,
        ) {
            let (tx, rx) = mpsc::unbounded_channel();
            let source = Arc::new(FakeSource {
                running: Mutex::new(running),
                events: Mutex::new(Some(rx)),
                lists: AtomicUsize::new(0),
                inspects: AtomicUsize::new(0),
                incomplete: false,
                slow: Mutex::new(HashMap::new()),
            });
            (source, tx)
        }

        /// Docker starts `container` and sends its event.
        fn start(
            &self,
            events: &UnboundedSender<Result<ContainerEvent, PlatformError>>,
            container: Container,
        ) {
            let id = container.id.clone();
            self.running.lock().unwrap().push(container);
            events.send(Ok(ContainerEvent::Changed(id))).unwrap();
        }

        fn listing_without_processes(running: Vec<Container>) -> Arc<FakeSource> {
            let (tx, rx) = mpsc::unbounded_channel();
            std::mem::forget(tx);
            Arc::new(FakeSource {
                running: Mutex::new(running),
                events: Mutex::new(Some(rx)),
                lists: AtomicUsize::new(0),
                inspects: AtomicUsize::new(0),
                incomplete: true,
                slow: Mutex::new(HashMap::new()),
            })
        }
    }

    #[async_trait]
    impl ContainerSource for FakeSource {
        async fn list(&self) -> Result<Vec<Container>, PlatformError> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            let running = self.running.lock().unwrap().clone();
            if self.incomplete {
                let listed = running.into_iter();
                return Ok(listed
                    .map(|c| c.with_process(Process::NotInspected))
                    .collect());
            }
            Ok(running)
        }
        fn list_is_complete(&self) -> bool {
            !self.incomplete
        }
        async fn inspect(&self, id: &str) -> Result<Option<Container>, PlatformError> {
            self.inspects.fetch_add(1, Ordering::SeqCst);
            let found = self
                .running
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.id == id)
                .cloned();
            let delay = self.slow.lock().unwrap().get(id).copied();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(found)
        }
        fn events(&self) -> EventStream {
            match self.events.lock().unwrap().take() {
                Some(rx) => Box::pin(tokio_stream_from(rx)),
                // A second subscription (after a break) sees no further events.
                None => Box::pin(futures_util::stream::pending()),
            }
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// Lets the watcher apply what it was sent. The tests run on tokio's
    /// paused clock: the miss wait, the list interval's pause and the
    /// reconnect backoff are tokio timers, skipped in no real time. Three
    /// tests stay on the real clock, those that look up again after a
    /// lookup waited out MISS_WAIT: a lookup's deadline is computed from
    /// `std::time::Instant` (`from_std(now + MISS_WAIT)`), so once the
    /// paused clock has run MISS_WAIT ahead of the wall clock, the next
    /// lookup's wait is over before it starts (and the negative cache's
    /// test, `a_non_container_caller_...`, would pass with no negative
    /// cache at all).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn running_process() -> (std::process::Child, Process) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let watch = ProcessWatch::unchecked(child.id() as i32).unwrap();
        (child, Process::Watched(Arc::new(watch)))
    }

    #[tokio::test(start_paused = true)]
    async fn listed_containers_processes_are_learnt_in_the_background_and_kept() {
        let (mut child, process) = running_process();
        let source = FakeSource::listing_without_processes(vec![
            container("a", "10.0.0.2").with_process(process.clone())
        ]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        let a = index.get("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(a.process, process, "inspected after the list");
        assert_eq!(source.inspects.load(Ordering::SeqCst), 1);
        // A miss relists; the known container is kept, not inspected again.
        assert!(index.lookup("10.0.0.99".parse().unwrap()).await.is_none());
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);
        let again = index.get("10.0.0.2".parse().unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(source.inspects.load(Ordering::SeqCst), 1);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// On the real clock: see `settle` for why.
    #[tokio::test]
    async fn a_container_whose_process_exited_is_dropped_before_dockers_event() {
        let (mut child, process) = running_process();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let (source, _events) =
            FakeSource::new(vec![container("old", "10.0.0.2").with_process(process)]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        let old = index.get(ip).unwrap();
        assert!(!old.has_exited());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(old.has_exited());
        // Docker still lists it and has sent no event: the kernel wins.
        assert!(index.lookup_after_exit(ip, &old).await.is_none());
        assert!(index.get(ip).is_none());
        // The address's next owner is found as soon as Docker knows it.
        source
            .running
            .lock()
            .unwrap()
            .push(container("new", "10.0.0.2"));
        assert_eq!(index.lookup(ip).await.unwrap().id, "new");
    }

    /// On the real clock: see `settle` for why.
    #[tokio::test]
    async fn an_exited_container_docker_still_lists_without_pids_is_not_indexed_again() {
        let (mut child, process) = running_process();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let source = FakeSource::listing_without_processes(vec![
            container("old", "10.0.0.2").with_process(process)
        ]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        let old = index.get(ip).unwrap();
        assert!(matches!(old.process, Process::Watched(_)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(index.lookup_after_exit(ip, &old).await.is_none());
        // Relisted (without a pid) and inspected again in the background:
        // still not indexed, since its process is the one that exited.
        assert!(index.lookup("10.0.0.99".parse().unwrap()).await.is_none());
        settle().await;
        assert!(source.lists.load(Ordering::SeqCst) >= 3);
        assert!(index.get(ip).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn start_and_die_events_keep_the_index_current() {
        let (source, events) = FakeSource::new(vec![container("a", "10.0.0.2")]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        assert!(index.is_synced());
        assert_eq!(index.get("10.0.0.2".parse().unwrap()).unwrap().id, "a");

        source.start(&events, container("b", "10.0.0.3"));
        settle().await;
        assert_eq!(index.get("10.0.0.3".parse().unwrap()).unwrap().id, "b");

        events.send(Ok(ContainerEvent::Gone("a".into()))).unwrap();
        settle().await;
        assert!(index.get("10.0.0.2".parse().unwrap()).is_none());
        assert_eq!(
            source.lists.load(Ordering::SeqCst),
            1,
            "events need no list"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_hear_of_containers_that_start_and_go() {
        let (source, events) = FakeSource::new(vec![container("a", "10.0.0.2")]);
        let index = ContainerIndex::watch(source.clone());
        let mut changes = index.subscribe();
        settle().await;
        assert!(matches!(changes.recv().await.unwrap(), IndexChange::Up(c) if c.id == "a"));
        source.start(&events, container("b", "10.0.0.3"));
        assert!(matches!(changes.recv().await.unwrap(), IndexChange::Up(c) if c.id == "b"));
        events.send(Ok(ContainerEvent::Gone("a".into()))).unwrap();
        assert!(matches!(changes.recv().await.unwrap(), IndexChange::Gone(c) if c.id == "a"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_address_triggers_one_refresh_that_finds_a_new_container() {
        let (source, _events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        // Started, but its event has not arrived.
        source
            .running
            .lock()
            .unwrap()
            .push(container("new", "10.0.0.9"));
        let found = index.lookup("10.0.0.9".parse().unwrap()).await;
        assert_eq!(found.unwrap().id, "new");
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_docker_lists_late_is_found_when_its_event_arrives() {
        let (source, events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let lookup = {
            let index = index.clone();
            tokio::spawn(async move { index.lookup(ip).await })
        };
        // The refresh list runs and misses; the connect event lands after it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        source
            .running
            .lock()
            .unwrap()
            .push(container("late", "10.0.0.7"));
        events
            .send(Ok(ContainerEvent::Changed("late".into())))
            .unwrap();
        assert_eq!(lookup.await.unwrap().unwrap().id, "late");
    }

    /// On the real clock: see `settle` for why.
    #[tokio::test]
    async fn a_non_container_caller_cannot_make_the_proxy_list_docker_in_a_loop() {
        let (source, _events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        for _ in 0..20 {
            assert!(index.lookup("10.9.9.9".parse().unwrap()).await.is_none());
        }
        assert_eq!(
            source.lists.load(Ordering::SeqCst),
            2,
            "one start-up list and one refresh, then the negative cache answers"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_list() {
        let (source, _events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        tokio::time::sleep(MIN_LIST_INTERVAL).await;
        let lookups = (1..=10).map(|i| {
            let index = index.clone();
            async move { index.lookup(format!("10.1.0.{i}").parse().unwrap()).await }
        });
        futures_util::future::join_all(lookups).await;
        assert!(source.lists.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_event_stream_is_followed_by_a_resync() {
        let (source, events) = FakeSource::new(vec![container("a", "10.0.0.2")]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        // While the stream is down, a changes address and c starts.
        *source.running.lock().unwrap() = vec![container("c", "10.0.0.4")];
        events
            .send(Err(PlatformError::Other("connection reset".into())))
            .unwrap();
        tokio::time::sleep(RECONNECT_MIN + Duration::from_millis(200)).await;
        assert!(index.get("10.0.0.2".parse().unwrap()).is_none());
        assert_eq!(index.get("10.0.0.4".parse().unwrap()).unwrap().id, "c");
    }

    #[tokio::test(start_paused = true)]
    async fn one_slow_inspect_does_not_hold_up_the_containers_behind_it() {
        let (source, events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        source
            .slow
            .lock()
            .unwrap()
            .insert("slow".into(), Duration::from_secs(5));
        source.start(&events, container("slow", "10.0.0.2"));
        source.start(&events, container("fast", "10.0.0.3"));
        settle().await;
        assert_eq!(index.get("10.0.0.3".parse().unwrap()).unwrap().id, "fast");
        assert!(index.get("10.0.0.2".parse().unwrap()).is_none());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(index.get("10.0.0.2".parse().unwrap()).unwrap().id, "slow");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_event_wins_over_an_inspection_still_in_flight() {
        let (source, events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        source
            .slow
            .lock()
            .unwrap()
            .insert("brief".into(), Duration::from_secs(1));
        // Docker answers "running" to the inspect, then the container dies.
        source.start(&events, container("brief", "10.0.0.2"));
        settle().await;
        source.running.lock().unwrap().clear();
        events
            .send(Ok(ContainerEvent::Gone("brief".into())))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(index.get("10.0.0.2".parse().unwrap()).is_none());
    }

    /// On the real clock: see `settle` for why.
    #[tokio::test]
    async fn a_miss_is_not_remembered_while_a_created_container_has_not_started() {
        let (source, events) = FakeSource::new(vec![]);
        let index = ContainerIndex::watch(source.clone());
        settle().await;
        events
            .send(Ok(ContainerEvent::Created("new".into())))
            .unwrap();
        settle().await;
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        // It asks before Docker lists it (the token PUT of a burst)...
        assert!(index.lookup(ip).await.is_none());
        source
            .running
            .lock()
            .unwrap()
            .push(container("new", "10.0.0.9"));
        // ...and asks again at once (the role listing): not answered from memory.
        assert_eq!(index.lookup(ip).await.unwrap().id, "new");
    }

    #[test]
    fn an_address_claimed_twice_is_served_to_neither() {
        let index =
            ContainerIndex::fixed(vec![container("a", "10.0.0.2"), container("b", "10.0.0.2")]);
        assert!(index.get("10.0.0.2".parse().unwrap()).is_none());
    }
}
