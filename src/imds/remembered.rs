//! A connection's last credentials answer, answered again while nothing it
//! was computed from has changed.
//!
//! SDKs keep their connection to the metadata service open and ask the same
//! credentials path on it again and again. [`Imds::respond`] works the
//! answer out from shared state each time: the path, the settings, the
//! container index, the alias map, the credential cache. Each step is cheap,
//! but together they write a dozen reference counts and locks that every
//! connection of a role shares, and on a busy host those writes move cache
//! lines between cores. The remembered answer is the connection's own: one
//! uncontended lock, a few reads of shared counters that change only when
//! their state does, and the response body copied for this connection.
//!
//! It answers only what `respond` would answer, byte for byte. It is kept
//! for one exact path and thrown out when any input of the answer changes:
//! - the alias map and the door's settings, each by snapshot (a reload can
//!   remap the alias or change the passthrough list);
//! - the container index's generation (any container or address changed);
//! - the container's process having exited (before Docker says so);
//! - the cached credentials (refreshed, dropped, or under `min_left`).
//!
//! The token is checked on every request, as `respond` checks it; a request
//! that `respond` would refuse (bad token, `X-Forwarded-For`, IMDSv1 under
//! `requireToken`) goes to `respond` and gets its refusal there.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Response};
use http_body_util::Full;

use super::token::Holder;
use super::{document, Imds, Reply, Settings};
use crate::container::Container;
use crate::credentials::Held;
use crate::roles::{Role, RoleMap};

/// One connection's remembered answer; see the module's documentation.
#[derive(Default)]
pub struct Remembered(Mutex<Option<Answer>>);

/// A credentials answer and everything it was computed from.
pub(super) struct Answer {
    /// The request's path as sent: the same bytes canonicalise and classify
    /// the same way under the same settings.
    pub(super) path: Box<str>,
    /// The snapshots it was computed from, compared by identity.
    pub(super) roles: Arc<RoleMap>,
    pub(super) settings: Arc<Settings>,
    /// [`crate::platform::index::ContainerIndex::generation`], read before the container was looked up.
    pub(super) index_generation: u64,
    pub(super) container: Arc<Container>,
    pub(super) role: Arc<Role>,
    pub(super) credentials: Held,
    /// This connection's copy of the document, so that answering it does not
    /// write the reference count that every connection of the key shares.
    pub(super) body: Bytes,
}

/// A remembered answer, and what the response log line says about it.
pub struct Hit<'a> {
    response: Option<Response<Full<Bytes>>>,
    answer: MutexGuard<'a, Option<Answer>>,
}

impl Hit<'_> {
    /// The response, once.
    pub fn take_response(&mut self) -> Response<Full<Bytes>> {
        self.response.take().expect("the response is taken once")
    }

    fn answer(&self) -> &Answer {
        self.answer.as_ref().expect("a hit has an answer")
    }

    pub fn container_name(&self) -> &str {
        &self.answer().container.name
    }

    pub fn alias(&self) -> &str {
        &self.answer().role.alias
    }
}

impl Remembered {
    fn lock(&self) -> MutexGuard<'_, Option<Answer>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the answer `reply` carries, if any, in place of the last one.
    pub fn keep(&self, reply: &mut Reply) {
        if let Some(answer) = reply.remember.take() {
            *self.lock() = Some(*answer);
        }
    }
}

impl Imds {
    /// The answer `respond` would give, when `memory` holds it; `None` sends
    /// the request to `respond`.
    pub fn remembered<'a>(
        &self,
        memory: &'a Remembered,
        caller: IpAddr,
        request: &http::request::Parts,
        now: SystemTime,
    ) -> Option<Hit<'a>> {
        if request.method != Method::GET && request.method != Method::HEAD {
            return None;
        }
        let guard = memory.lock();
        let answer = guard.as_ref()?;
        if *answer.path != *request.uri.path()
            || !Arc::ptr_eq(&self.settings.load(), &answer.settings)
            || !Arc::ptr_eq(&self.broker.roles(), &answer.roles)
            || self.broker.index_generation() != answer.index_generation
            || answer.container.has_exited()
        {
            return None;
        }
        let holder = Holder::new(caller, Some(&answer.container.id));
        let unix_now = crate::time::unix_secs(now);
        if self
            .token_refusal(&request.headers, holder, &answer.settings, unix_now)
            .is_some()
        {
            return None;
        }
        if !answer.credentials.still_answers(now) {
            return None;
        }
        Some(Hit {
            response: Some(document::text(answer.body.clone())),
            answer: guard,
        })
    }
}
