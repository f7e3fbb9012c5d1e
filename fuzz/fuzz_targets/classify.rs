//! Whatever the path, nothing `classify` passes through names an identity
//! route; `canonicalize` is idempotent on its own output; and re-encoding the
//! canonical path does not change its classification. The same properties as
//! `tests/security.rs` (`properties`), from the same file: the oracle and the
//! checks live in `tests/support/identity.rs`, compiled in here.

#![no_main]

use ec2metaproxy::config::DEFAULT_PASSTHROUGH;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/identity.rs"]
mod identity;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let allowed: Vec<String> = DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect();
    if let Err(problem) = identity::check_path(raw, &allowed) {
        panic!("{problem}");
    }
});
