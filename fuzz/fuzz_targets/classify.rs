//! Whatever the path, nothing `classify` passes through names an identity
//! route; `canonicalize` is idempotent on its own output; and re-encoding the
//! canonical path does not change its classification. The same properties as
//! `tests/security.rs` (`properties`), for libFuzzer.

#![no_main]

use ec2metaproxy::config::DEFAULT_PASSTHROUGH;
use ec2metaproxy::imds::path::{canonicalize, classify, names_identity, Route};
use libfuzzer_sys::fuzz_target;

/// Identity routes after the API version, lowercased (user-data included:
/// it is off by default).
const IDENTITY: &[&str] = &[
    "meta-data/iam/",
    "meta-data/identity-credentials/",
    "dynamic/instance-identity/pkcs7/",
    "dynamic/instance-identity/signature/",
    "dynamic/instance-identity/rsa2048/",
    "dynamic/instance-identity/rsa/",
    "dynamic/fws/",
    "user-data/",
];

/// Independent of path.rs and deliberately paranoid: decodes until nothing
/// changes, treats `\ ; ? #` as separators, trims whitespace, lowercases and
/// resolves dot segments.
fn upstream_names_identity(path: &str) -> bool {
    let mut text = path.to_string();
    for _ in 0..8 {
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let text = text
        .to_lowercase()
        .replace(
            ['\\', ';', '?', '#', '\u{ff0f}', '\u{2215}', '\u{2044}'],
            "/",
        )
        .replace('\u{ff0e}', ".");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment.trim_matches(|c: char| c.is_whitespace() || c.is_control()) {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let rest = format!("{}/", segments.get(1..).unwrap_or_default().join("/"));
    IDENTITY.iter().any(|identity| rest.starts_with(identity))
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = canonicalize(raw) else {
        return;
    };
    let allowed: Vec<String> = DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect();
    let route = classify(&path, &allowed);
    let uri = path.to_uri_path();
    let again = canonicalize(&uri).unwrap_or_else(|e| panic!("{raw:?} -> {uri:?}: {e}"));
    assert_eq!(
        again, path,
        "canonicalize is idempotent: {raw:?} -> {uri:?}"
    );
    assert_eq!(classify(&again, &allowed), route, "re-encoded: {raw:?}");
    if let Route::Passthrough(forwarded) = &route {
        assert!(
            !upstream_names_identity(forwarded),
            "{raw:?} passes through as {forwarded:?}"
        );
        let rest = path.segments[1..].join("/");
        assert!(
            rest.is_empty() || rest == "meta-data" || rest == "dynamic" || !names_identity(&rest),
            "{raw:?} passes through as {forwarded:?}"
        );
        assert!(
            forwarded
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'\\'),
            "{raw:?} passes through as {forwarded:?}"
        );
    }
});
