//! The fixtures every spec file shares, so that the spec files hold only
//! rules. Spec files import from here, never from each other.
//!
//! * [`host`]: the proxy wired as `main` wires it, on fakes: one harness
//!   for every test, in process or on a loopback listener.
//! * [`by_token`]: the container credentials door (by token) on a host's
//!   core, with its grants' token files.
//! * [`docker`]: the one fake Docker, and the containers it runs.
//! * [`sts`] and [`upstream`]: the fake STS and the fake upstream metadata
//!   service, both counting what they are asked.
//! * [`exchange`]: requests in (a request head, raw bytes), whole answers
//!   out (status, headers, body), in process or over a socket.
//! * [`identity`]: the identity oracle and the classifier's properties,
//!   shared with `fuzz/fuzz_targets/classify.rs`.
//! * [`corpus`]: the reader of `tests/corpus/identity-requests.txt`.

pub mod by_token;
pub mod corpus;
pub mod docker;
pub mod exchange;
pub mod host;
pub mod identity;
pub mod sts;
pub mod upstream;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fixed test clock: 2026-11-22T20:00:00Z.
pub const NOW_SECS: u64 = 1_795_377_600;

/// [`NOW_SECS`] as a time.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
