//! Role credentials from STS, cached per (role ARN, session policy, session name).
//!
//! A cached answer is a read lock on a map and an atomic load. A miss, or
//! credentials too close to expiry, takes that key's own async lock, so
//! concurrent requests for one key cause one AssumeRole and other keys never
//! wait. A background task refreshes entries well ahead of expiry, so a
//! request almost never waits on STS.

pub mod sts;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use crate::metrics::metrics;
use crate::roles::RoleArn;
use crate::time::unix_secs;
use sts::{AssumeRole, Credentials, StsError, NO_RESPONSE};

/// What STS is asked; also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleRequest {
    pub role_arn: RoleArn,
    pub policy: Option<Arc<str>>,
    pub session_name: Arc<str>,
    pub external_id: Option<Arc<str>>,
    /// The alias's own session duration; the config's `sessionDuration` when `None`.
    pub duration: Option<Duration>,
    /// Session tags and SourceIdentity are part of the key: a change of
    /// either gives a new session, never the old one's credentials.
    pub tags: Arc<[(Arc<str>, Arc<str>)]>,
    pub transitive_tag_keys: Arc<[Arc<str>]>,
    pub source_identity: Option<Arc<str>>,
}

/// Why STS refused a tagged AssumeRole, when the tags are the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaggingCause {
    /// The trust policy does not allow `sts:TagSession`.
    TagSession,
    /// The trust policy does not allow `sts:SetSourceIdentity`.
    SetSourceIdentity,
    /// The tags and session policy, packed, are over STS's size.
    PackedPolicyTooLarge,
}

impl TaggingCause {
    /// The cause of `error`, when `request` carried what it names. STS
    /// names the action it refused in AccessDenied's message.
    pub fn of(error: &StsError, request: &RoleRequest) -> Option<TaggingCause> {
        let tagged = !request.tags.is_empty();
        match error.code.as_str() {
            "PackedPolicyTooLarge" if tagged => Some(TaggingCause::PackedPolicyTooLarge),
            "AccessDenied" if tagged && error.message.contains("sts:TagSession") => {
                Some(TaggingCause::TagSession)
            }
            "AccessDenied"
                if request.source_identity.is_some()
                    && error.message.contains("sts:SetSourceIdentity") =>
            {
                Some(TaggingCause::SetSourceIdentity)
            }
            _ => None,
        }
    }

    /// The metric's `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            TaggingCause::TagSession => "TagSession",
            TaggingCause::SetSourceIdentity => "SetSourceIdentity",
            TaggingCause::PackedPolicyTooLarge => "PackedPolicyTooLarge",
        }
    }

    /// What the operator does about it.
    pub fn fix(self, role_arn: &RoleArn) -> String {
        match self {
            TaggingCause::TagSession | TaggingCause::SetSourceIdentity => format!(
                "add \"sts:{}\" to the Action of the trust policy statement of {role_arn} that allows sts:AssumeRole (\"Action\": [\"sts:AssumeRole\", \"sts:TagSession\", \"sts:SetSourceIdentity\"]), or turn {} off",
                self.label(),
                match self {
                    TaggingCause::TagSession => "sessionTags",
                    _ => "sourceIdentity",
                }
            ),
            TaggingCause::PackedPolicyTooLarge => format!(
                "the session tags and session policy of {role_arn} are too large once packed: send fewer or shorter tags (sessionTags) or a shorter policy"
            ),
        }
    }
}

/// Tagging refusals still in force, by alias: logged once each, shown by
/// `/readyz` until a tagged AssumeRole of the alias succeeds.
#[derive(Default)]
struct TaggingFailures {
    /// How many are in force, read first so a success costs no lock.
    count: std::sync::atomic::AtomicUsize,
    by_alias: std::sync::Mutex<std::collections::BTreeMap<(String, TaggingCause), String>>,
}

/// When to refresh and what may still be served, from the session duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub duration: Duration,
    /// The background task refreshes credentials with less than this left.
    pub refresh_ahead: Duration,
    /// A request never gets credentials with less than this left while STS
    /// answers. botocore treats under ~25 minutes as stale and Java prefetches
    /// at half the lifetime, so keep at least 30 minutes for a 1 h session.
    pub min_left: Duration,
}

impl Timing {
    pub fn for_duration(duration: Duration) -> Timing {
        Timing {
            duration,
            refresh_ahead: (duration * 2 / 3).min(Duration::from_secs(40 * 60)),
            min_left: (duration / 2).min(Duration::from_secs(30 * 60)),
        }
    }
}

/// True when credentials expiring at `expiration` have less than `buffer`
/// left at `now`. Pure, so the edges are tested with plain numbers.
pub fn expires_within(expiration: SystemTime, buffer: Duration, now: SystemTime) -> bool {
    match expiration.duration_since(now) {
        Ok(left) => left < buffer,
        Err(_) => true,
    }
}

/// Refreshes spread over this fraction of the refresh window so that a host's
/// roles do not all call STS in the same second.
const JITTER_FRACTION: u32 = 10;
/// Still-valid credentials are served during an STS failure only while they
/// have at least this long left: clients need time to use them.
const STALE_FLOOR: Duration = Duration::from_secs(5 * 60);
/// After a failed AssumeRole, requests holding still-valid credentials are
/// answered from the cache for this long instead of waiting on STS again.
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// A key nobody asked for in this long is dropped at the next sweep.
const IDLE_DROP: Duration = Duration::from_secs(2 * 60 * 60);

struct Slot {
    current: ArcSwapOption<Credentials>,
    /// Bumped after `current` is replaced and when the slot leaves the
    /// cache, so a [`Held`] knows its credentials are no longer the answer.
    generation: AtomicU64,
    loading: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
    /// Unix seconds of the last failed AssumeRole (0: none since the last success).
    failed_at: AtomicU64,
    jitter: Duration,
}

/// Credentials from the cache, and a hold on the key they were cached
/// under: [`Held::still_answers`] tells, without touching the cache's map,
/// whether [`CredentialCache::get`] would answer the same credentials now.
pub struct Held {
    slot: Arc<Slot>,
    generation: u64,
    min_left: Duration,
    pub credentials: Arc<Credentials>,
}

impl Held {
    /// True while the key is cached, its credentials have not been replaced
    /// and they still have `min_left` to live: then a request is answered
    /// with them as `get` would, and counts as a use of the key.
    pub fn still_answers(&self, now: SystemTime) -> bool {
        if self.slot.generation.load(Ordering::Acquire) != self.generation
            || expires_within(self.credentials.expiration, self.min_left, now)
        {
            return false;
        }
        self.slot.touch(now);
        metrics().cache_hits.inc();
        true
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("generation", &self.generation)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl Slot {
    /// Records a use at `now`. Written once a second at most: the slot is
    /// shared by every connection of the key, and a store on each request
    /// would move its cache line between cores.
    fn touch(&self, now: SystemTime) {
        let used = unix_secs(now);
        if self.last_used.load(Ordering::Relaxed) != used {
            self.last_used.store(used, Ordering::Relaxed);
        }
    }
}

pub struct CredentialCache {
    sts: Arc<dyn AssumeRole>,
    timing: Timing,
    slots: RwLock<crate::FastHashMap<RoleRequest, Arc<Slot>>>,
    /// The last AssumeRole got no answer at all (network, DNS, timeout).
    sts_unreachable: AtomicBool,
    tagging_failures: TaggingFailures,
}

/// Keeps the slots `keep` accepts. A slot that leaves the cache has its
/// generation bumped, so a [`Held`] of it stops answering.
fn retain_slots(
    slots: &mut crate::FastHashMap<RoleRequest, Arc<Slot>>,
    mut keep: impl FnMut(&RoleRequest, &Slot) -> bool,
) {
    slots.retain(|request, slot| {
        let kept = keep(request, slot);
        if !kept {
            slot.generation.fetch_add(1, Ordering::Release);
        }
        kept
    });
}

impl CredentialCache {
    pub fn new(sts: Arc<dyn AssumeRole>, timing: Timing) -> CredentialCache {
        CredentialCache {
            sts,
            timing,
            slots: RwLock::new(Default::default()),
            sts_unreachable: AtomicBool::new(false),
            tagging_failures: TaggingFailures::default(),
        }
    }

    /// Records the outcome of a request of `alias` for its tagging: a
    /// refusal caused by the tags is counted, logged once per alias and
    /// cause with its fix, and shown by [`ready`](Self::ready) until a
    /// request of the alias succeeds.
    pub fn note_tagging(&self, alias: &str, request: &RoleRequest, result: Result<(), &StsError>) {
        let failures = &self.tagging_failures;
        match result {
            Ok(()) => {
                if failures.count.load(Ordering::Relaxed) == 0 {
                    return;
                }
                let mut by_alias = failures
                    .by_alias
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                by_alias.retain(|(failed, _), _| failed != alias);
                failures.count.store(by_alias.len(), Ordering::Relaxed);
            }
            Err(error) => {
                let Some(cause) = TaggingCause::of(error, request) else {
                    return;
                };
                metrics()
                    .sts_tagging_errors
                    .with_label_values(&[alias, cause.label()])
                    .inc();
                let mut by_alias = failures
                    .by_alias
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if by_alias.contains_key(&(alias.to_string(), cause)) {
                    return;
                }
                let fix = cause.fix(&request.role_arn);
                log::error!(
                    "alias {alias}: STS refused the session's {} ({}); no untagged credentials are served. Fix: {fix}",
                    match cause {
                        TaggingCause::SetSourceIdentity => "SourceIdentity",
                        TaggingCause::TagSession | TaggingCause::PackedPolicyTooLarge => "tags",
                    },
                    error.code,
                );
                by_alias.insert((alias.to_string(), cause), fix);
                failures.count.store(by_alias.len(), Ordering::Relaxed);
            }
        }
    }

    /// Whether requests can be answered: STS reachable as far as we know, or
    /// credentials cached to serve meanwhile.
    pub fn ready(&self) -> Result<(), String> {
        let any_cached = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|slot| slot.current.load().is_some());
        if self.sts_unreachable.load(Ordering::Relaxed) && !any_cached {
            return Err("STS cannot be called (network, or the proxy's own credentials) and no credentials are cached".into());
        }
        if self.tagging_failures.count.load(Ordering::Relaxed) > 0 {
            let by_alias = self
                .tagging_failures
                .by_alias
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let causes: Vec<String> = by_alias
                .iter()
                .map(|((alias, cause), fix)| {
                    format!("alias {alias}: STS refused {}: {fix}", cause.label())
                })
                .collect();
            if !causes.is_empty() {
                return Err(causes.join("; "));
            }
        }
        Ok(())
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The timing for one key: its own duration when the alias sets one.
    fn timing_for(&self, request: &RoleRequest) -> Timing {
        match request.duration {
            Some(duration) => Timing::for_duration(duration),
            None => self.timing,
        }
    }

    fn slot(&self, request: &RoleRequest) -> Arc<Slot> {
        if let Some(slot) = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(request)
        {
            return slot.clone();
        }
        let spread = self
            .timing
            .refresh_ahead
            .saturating_sub(self.timing.min_left)
            / JITTER_FRACTION;
        let jitter = spread.mul_f64(rand::random::<f64>());
        self.slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(request.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    current: ArcSwapOption::empty(),
                    generation: AtomicU64::new(0),
                    loading: tokio::sync::Mutex::new(()),
                    last_used: AtomicU64::new(0),
                    failed_at: AtomicU64::new(0),
                    jitter,
                })
            })
            .clone()
    }

    /// Credentials for `request` with at least `min_left` of life, from the
    /// cache when it has them.
    pub async fn get(
        &self,
        request: &RoleRequest,
        now: SystemTime,
    ) -> Result<Arc<Credentials>, StsError> {
        self.get_held(request, now)
            .await
            .map(|held| held.credentials)
    }

    /// Like [`get`](Self::get), with a hold that tells later whether the
    /// same call would still answer these credentials.
    pub async fn get_held(&self, request: &RoleRequest, now: SystemTime) -> Result<Held, StsError> {
        let slot = self.slot(request);
        let timing = self.timing_for(request);
        slot.touch(now);
        // Read before `current`: a replacement after this read changes it.
        let generation = slot.generation.load(Ordering::Acquire);
        let (credentials, generation) = match slot.current.load_full() {
            Some(current) if !expires_within(current.expiration, timing.min_left, now) => {
                metrics().cache_hits.inc();
                (current, generation)
            }
            _ => {
                metrics().cache_misses.inc();
                // Boxed: the miss path's future (STS call, retries) is large,
                // and every request's future would otherwise carry its size.
                Box::pin(self.get_missed(request, &slot, timing, now, generation)).await?
            }
        };
        Ok(Held {
            slot,
            generation,
            min_left: timing.min_left,
            credentials,
        })
    }

    async fn get_missed(
        &self,
        request: &RoleRequest,
        slot: &Slot,
        timing: Timing,
        now: SystemTime,
        generation: u64,
    ) -> Result<(Arc<Credentials>, u64), StsError> {
        // STS just failed for this key and the credentials in hand are still
        // good: serve them now rather than make the client wait on STS again.
        // The background sweep keeps trying.
        let failed_at = slot.failed_at.load(Ordering::Relaxed);
        if failed_at != 0 && unix_secs(now).saturating_sub(failed_at) < FAILURE_BACKOFF.as_secs() {
            if let Some(stale) = slot.current.load_full() {
                if !expires_within(stale.expiration, STALE_FLOOR, now) {
                    return Ok((stale, generation));
                }
            }
        }
        let _loading = slot.loading.lock().await;
        // Whoever held the lock before us may have fetched them already.
        let credentials = match slot.current.load_full() {
            Some(current) if !expires_within(current.expiration, timing.min_left, now) => current,
            _ => self.load(request, slot, now).await?,
        };
        // `current` is only replaced under `loading`, so this is the
        // generation of `credentials`.
        Ok((credentials, slot.generation.load(Ordering::Acquire)))
    }

    async fn load(
        &self,
        request: &RoleRequest,
        slot: &Slot,
        now: SystemTime,
    ) -> Result<Arc<Credentials>, StsError> {
        let result = self
            .sts
            .assume_role(request, self.timing_for(request).duration)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.code.as_str(),
        };
        metrics().sts_calls.with_label_values(&[outcome]).inc();
        // STS answering at all, even with an error, means it is reachable.
        self.sts_unreachable.store(
            matches!(&result, Err(e) if e.code == NO_RESPONSE),
            Ordering::Relaxed,
        );
        slot.failed_at.store(
            if result.is_ok() {
                0
            } else {
                unix_secs(now).max(1)
            },
            Ordering::Relaxed,
        );
        match result {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                slot.current.store(Some(fresh.clone()));
                slot.generation.fetch_add(1, Ordering::Release);
                Ok(fresh)
            }
            Err(error) => match slot.current.load_full() {
                Some(stale) if !expires_within(stale.expiration, STALE_FLOOR, now) => {
                    log::warn!("{error}; serving the previous credentials, which are still valid");
                    Ok(stale)
                }
                _ => Err(error),
            },
        }
    }

    /// Refreshes every entry due at `now` and drops entries nobody asked for
    /// recently. Returns how many refreshes failed.
    pub async fn refresh_due(&self, now: SystemTime) -> usize {
        let idle_before = unix_secs(now).saturating_sub(IDLE_DROP.as_secs());
        let due: Vec<(RoleRequest, Arc<Slot>)> = {
            let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
            retain_slots(&mut slots, |_, slot| {
                slot.last_used.load(Ordering::Relaxed) >= idle_before
            });
            slots
                .iter()
                .filter(|(_, slot)| match slot.current.load().as_ref() {
                    Some(c) => {
                        expires_within(c.expiration, self.timing.refresh_ahead + slot.jitter, now)
                    }
                    None => false,
                })
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect()
        };
        let refreshes = due.into_iter().map(|(request, slot)| async move {
            // A request already loading this key does the work for us.
            let Ok(_loading) = slot.loading.try_lock() else {
                return true;
            };
            match self.load(&request, &slot, now).await {
                Ok(_) => {
                    log::debug!(
                        "refreshed credentials for {} ({})",
                        request.role_arn,
                        request.session_name
                    );
                    true
                }
                Err(error) => {
                    log::error!("background refresh: {error}");
                    false
                }
            }
        });
        futures_util::future::join_all(refreshes)
            .await
            .into_iter()
            .filter(|ok| !ok)
            .count()
    }

    /// Drops every key of a session (a container that is gone), so its
    /// credentials are never served again and never refreshed.
    pub fn forget_session(&self, session_name: &str) {
        retain_slots(
            &mut self.slots.write().unwrap_or_else(PoisonError::into_inner),
            |request, _| &*request.session_name != session_name,
        );
    }

    /// Number of keys cached.
    pub fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often the background task looks for credentials to refresh.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Runs [`CredentialCache::refresh_due`] until the cache is dropped.
pub fn spawn_refresher(cache: &Arc<CredentialCache>) {
    let weak = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cache) = weak.upgrade() else { return };
            cache.refresh_due(SystemTime::now()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::sts::{Rendered, Secret};
    use async_trait::async_trait;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// Counts calls; issues credentials valid for the asked duration from the
    /// fake clock, or fails while `failing` is set.
    struct CountingSts {
        calls: AtomicUsize,
        now: Mutex<SystemTime>,
        failing: Mutex<bool>,
        /// Fail as a network error would, with no answer from STS.
        unreachable: Mutex<bool>,
        delay: Duration,
    }

    impl CountingSts {
        fn new(delay: Duration) -> Arc<CountingSts> {
            Arc::new(CountingSts {
                calls: AtomicUsize::new(0),
                now: Mutex::new(at(0)),
                failing: Mutex::new(false),
                unreachable: Mutex::new(false),
                delay,
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl AssumeRole for CountingSts {
        async fn assume_role(
            &self,
            request: &RoleRequest,
            duration: Duration,
        ) -> Result<Credentials, StsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if *self.unreachable.lock().unwrap() {
                return Err(StsError {
                    role_arn: request.role_arn.to_string(),
                    session_name: request.session_name.to_string(),
                    code: NO_RESPONSE.into(),
                    message: "dispatch failure: connection refused".into(),
                });
            }
            if *self.failing.lock().unwrap() {
                return Err(StsError {
                    role_arn: request.role_arn.to_string(),
                    session_name: request.session_name.to_string(),
                    code: "Throttling".into(),
                    message: "Rate exceeded".into(),
                });
            }
            let now = *self.now.lock().unwrap();
            Ok(Credentials {
                access_key_id: format!("ASIA{n}"),
                secret_access_key: Secret::new(format!("secret{n}")),
                session_token: Secret::new(format!("token{n}")),
                expiration: now + duration,
                last_updated: now,
                rendered: Rendered::default(),
            })
        }
    }

    fn request(session: &str) -> RoleRequest {
        RoleRequest {
            role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/R").unwrap(),
            policy: None,
            session_name: Arc::from(session),
            external_id: None,
            duration: None,
            tags: Arc::from([]),
            transitive_tag_keys: Arc::from([]),
            source_identity: None,
        }
    }

    #[test]
    fn expiry_edges() {
        let buffer = Duration::from_secs(60);
        assert!(!expires_within(at(1000), buffer, at(900)));
        assert!(
            !expires_within(at(1000), buffer, at(940)),
            "exactly the buffer left is fine"
        );
        assert!(expires_within(at(1000), buffer, at(941)));
        assert!(
            expires_within(at(1000), buffer, at(2000)),
            "already expired"
        );
    }

    #[test]
    fn timing_for_the_default_hour_keeps_30_minutes_for_clients() {
        let timing = Timing::for_duration(HOUR);
        assert_eq!(timing.refresh_ahead, Duration::from_secs(40 * 60));
        assert_eq!(timing.min_left, Duration::from_secs(30 * 60));
        let short = Timing::for_duration(Duration::from_secs(900));
        assert_eq!(short.min_left, Duration::from_secs(450));
        assert_eq!(short.refresh_ahead, Duration::from_secs(600));
    }

    fn tagged(session: &str, service: &str, identity: Option<&str>) -> RoleRequest {
        RoleRequest {
            tags: Arc::from([(Arc::from("service"), Arc::from(service))]),
            transitive_tag_keys: Arc::from([Arc::from("service")]),
            source_identity: identity.map(Arc::from),
            ..request(session)
        }
    }

    #[tokio::test]
    async fn a_change_of_tags_or_source_identity_gives_a_new_session() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        let first = cache.get(&tagged("a", "api", None), at(0)).await.unwrap();
        let again = cache.get(&tagged("a", "api", None), at(1)).await.unwrap();
        assert_eq!(first.access_key_id, again.access_key_id);
        assert_eq!(sts.calls(), 1);
        let other_tag = cache.get(&tagged("a", "web", None), at(2)).await.unwrap();
        let other_identity = cache
            .get(&tagged("a", "api", Some("alice")), at(3))
            .await
            .unwrap();
        let untagged = cache.get(&request("a"), at(4)).await.unwrap();
        assert_eq!(sts.calls(), 4);
        let keys = [
            &first.access_key_id,
            &other_tag.access_key_id,
            &other_identity.access_key_id,
            &untagged.access_key_id,
        ];
        assert!(keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)));
    }

    fn refusal(code: &str, message: &str) -> StsError {
        StsError {
            role_arn: "arn:aws:iam::123456789012:role/R".into(),
            session_name: "s".into(),
            code: code.into(),
            message: message.into(),
        }
    }

    const NO_TAG_SESSION: &str = "User: arn:aws:sts::123456789012:assumed-role/host/i-1 is not authorized to perform: sts:TagSession on resource: arn:aws:iam::123456789012:role/R";

    #[test]
    fn refusals_are_blamed_on_tagging_only_when_sts_names_it() {
        let tags = tagged("a", "api", None);
        let identity = RoleRequest {
            source_identity: Some(Arc::from("alice")),
            ..request("a")
        };
        let cases = [
            (
                "AccessDenied",
                NO_TAG_SESSION,
                &tags,
                Some(TaggingCause::TagSession),
            ),
            ("AccessDenied", NO_TAG_SESSION, &identity, None),
            (
                "AccessDenied",
                "not authorized to perform: sts:SetSourceIdentity",
                &identity,
                Some(TaggingCause::SetSourceIdentity),
            ),
            (
                "PackedPolicyTooLarge",
                "Packed size 103%",
                &tags,
                Some(TaggingCause::PackedPolicyTooLarge),
            ),
            (
                "AccessDenied",
                "not authorized to perform: sts:AssumeRole",
                &tags,
                None,
            ),
            ("Throttling", "Rate exceeded", &tags, None),
        ];
        for (code, message, request, expected) in cases {
            assert_eq!(
                TaggingCause::of(&refusal(code, message), request),
                expected,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn a_tagging_refusal_shows_in_readiness_and_the_metric_until_the_alias_succeeds() {
        let cache =
            CredentialCache::new(CountingSts::new(Duration::ZERO), Timing::for_duration(HOUR));
        let request = tagged("a", "api", None);
        let counted = || {
            metrics()
                .sts_tagging_errors
                .with_label_values(&["tagged-alias", "TagSession"])
                .get()
        };
        let before = counted();
        let denied = refusal("AccessDenied", NO_TAG_SESSION);
        cache.note_tagging("tagged-alias", &request, Err(&denied));
        cache.note_tagging("tagged-alias", &request, Err(&denied));
        assert_eq!(counted() - before, 2);
        let why = cache.ready().unwrap_err();
        assert!(why.starts_with("alias tagged-alias: STS refused TagSession: add \"sts:TagSession\" to the Action of the trust policy statement of arn:aws:iam::123456789012:role/R"), "{why}");
        cache.note_tagging("other", &request, Ok(()));
        assert!(
            cache.ready().is_err(),
            "another alias's success changes nothing"
        );
        cache.note_tagging("tagged-alias", &request, Ok(()));
        assert_eq!(cache.ready(), Ok(()));
    }

    /// The fake STS's delays are tokio time: on the paused clock they
    /// overlap or queue exactly as they would, in no real time.
    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_for_one_key_make_one_assume_role() {
        let sts = CountingSts::new(Duration::from_millis(50));
        let cache = Arc::new(CredentialCache::new(
            sts.clone(),
            Timing::for_duration(HOUR),
        ));
        let gets = (0..20).map(|_| {
            let cache = cache.clone();
            async move {
                cache
                    .get(&request("a"), at(0))
                    .await
                    .unwrap()
                    .access_key_id
                    .clone()
            }
        });
        let keys = futures_util::future::join_all(gets).await;
        assert_eq!(sts.calls(), 1);
        assert!(keys.iter().all(|k| k == "ASIA1"));
    }

    #[tokio::test(start_paused = true)]
    async fn different_keys_do_not_wait_for_each_other() {
        let sts = CountingSts::new(Duration::from_millis(200));
        let cache = Arc::new(CredentialCache::new(
            sts.clone(),
            Timing::for_duration(HOUR),
        ));
        let started = tokio::time::Instant::now();
        let (ra, rb) = (request("a"), request("b"));
        let (a, b) = tokio::join!(cache.get(&ra, at(0)), cache.get(&rb, at(0)));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(sts.calls(), 2);
        assert!(
            started.elapsed() < Duration::from_millis(390),
            "ran in parallel"
        );
    }

    #[tokio::test]
    async fn cached_credentials_are_served_until_30_minutes_are_left() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        cache.get(&request("a"), at(30 * 60)).await.unwrap();
        assert_eq!(sts.calls(), 1, "exactly 30 minutes left is still served");
        *sts.now.lock().unwrap() = at(30 * 60 + 1);
        let fresh = cache.get(&request("a"), at(30 * 60 + 1)).await.unwrap();
        assert_eq!(sts.calls(), 2);
        assert_eq!(fresh.access_key_id, "ASIA2");
    }

    #[tokio::test]
    async fn background_refresh_runs_ahead_of_requests_and_once_per_window() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        assert_eq!(cache.refresh_due(at(10 * 60)).await, 0);
        assert_eq!(sts.calls(), 1, "50 minutes left: nothing due");
        *sts.now.lock().unwrap() = at(26 * 60);
        cache.refresh_due(at(26 * 60)).await;
        assert_eq!(sts.calls(), 2, "34 minutes left: due whatever the jitter");
        cache.refresh_due(at(27 * 60)).await;
        assert_eq!(sts.calls(), 2, "the new credentials are not due again");
        let served = cache.get(&request("a"), at(27 * 60)).await.unwrap();
        assert_eq!(served.access_key_id, "ASIA2");
        assert_eq!(sts.calls(), 2, "the request found them ready");
    }

    #[tokio::test]
    async fn during_an_sts_outage_still_valid_credentials_keep_being_served() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        *sts.failing.lock().unwrap() = true;
        assert_eq!(
            cache.refresh_due(at(30 * 60)).await,
            0,
            "stale but valid is not a failure"
        );
        let served = cache.get(&request("a"), at(40 * 60)).await.unwrap();
        assert_eq!(served.access_key_id, "ASIA1");
        let error = cache.get(&request("a"), at(56 * 60)).await.unwrap_err();
        assert_eq!(error.code, "Throttling");
        assert_eq!(
            error.to_string(),
            "AssumeRole arn:aws:iam::123456789012:role/R (session a) failed: Throttling: Rate exceeded"
        );
    }

    #[tokio::test]
    async fn after_a_failure_requests_get_valid_credentials_without_waiting_on_sts() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        *sts.failing.lock().unwrap() = true;
        cache.get(&request("a"), at(31 * 60)).await.unwrap();
        assert_eq!(sts.calls(), 2, "the first request past min_left tries STS");
        for s in 0..10 {
            let served = cache.get(&request("a"), at(31 * 60 + s)).await.unwrap();
            assert_eq!(served.access_key_id, "ASIA1");
        }
        assert_eq!(sts.calls(), 2, "then the cache answers during the backoff");
        cache.get(&request("a"), at(31 * 60 + 31)).await.unwrap();
        assert_eq!(sts.calls(), 3, "after the backoff a request tries again");
    }

    #[tokio::test]
    async fn a_gone_containers_sessions_are_forgotten() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        cache.get(&request("b"), at(0)).await.unwrap();
        cache.forget_session("a");
        assert_eq!(cache.len(), 1);
        cache.get(&request("a"), at(1)).await.unwrap();
        assert_eq!(
            sts.calls(),
            3,
            "a new container with that session starts fresh"
        );
    }

    #[tokio::test]
    async fn not_ready_while_sts_cannot_be_reached_and_nothing_is_cached() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        assert!(cache.ready().is_ok(), "nothing known yet");
        *sts.unreachable.lock().unwrap() = true;
        assert!(cache.get(&request("a"), at(0)).await.is_err());
        assert_eq!(
            cache.ready(),
            Err("STS cannot be called (network, or the proxy's own credentials) and no credentials are cached".into()),
            "a failed key holds no credentials"
        );
        *sts.unreachable.lock().unwrap() = false;
        cache.get(&request("a"), at(0)).await.unwrap();
        assert!(cache.ready().is_ok());
    }

    #[tokio::test]
    async fn keys_nobody_asks_for_are_dropped() {
        let sts = CountingSts::new(Duration::ZERO);
        let cache = CredentialCache::new(sts.clone(), Timing::for_duration(HOUR));
        cache.get(&request("a"), at(0)).await.unwrap();
        cache.refresh_due(at(60)).await;
        assert_eq!(cache.len(), 1);
        cache.refresh_due(at(3 * 3600)).await;
        assert_eq!(cache.len(), 0);
    }
}
