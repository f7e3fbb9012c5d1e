//! The identity oracle: an idea of "this path names the host's identity"
//! that is independent of `src/imds/path.rs` and deliberately paranoid;
//! and the properties every path must have, judged with it.
//!
//! One copy, two users: `tests/security.rs` (the corpus and proptest) and
//! `fuzz/fuzz_targets/classify.rs`, which compiles this file in through
//! `#[path]`. So it uses only `ec2metaproxy` and `percent_encoding`, never
//! the test crate (`support_is_shared_with_the_fuzz_target` in
//! tests/security.rs holds both).

use ec2metaproxy::imds::path::{
    canonicalize, classify, names_identity, CanonicalPath, ContainerRoute, Route,
};

/// Routes, after the API version and lowercased, that hold the host's
/// identity or secrets (user-data included: it is off by default).
pub const IDENTITY: &[&[&str]] = &[
    &["meta-data", "iam"],
    &["meta-data", "identity-credentials"],
    &["dynamic", "instance-identity", "pkcs7"],
    &["dynamic", "instance-identity", "signature"],
    &["dynamic", "instance-identity", "rsa2048"],
    &["dynamic", "instance-identity", "rsa"],
    &["dynamic", "fws"],
    &["user-data"],
];

/// Paranoid, independent of `path.rs`: decodes percent-escapes until nothing
/// changes, treats `\`, `;`, `?`, `#` and the lookalikes of `/` as
/// separators, trims whitespace, controls and zero-width spaces, lowercases,
/// resolves dot segments (a fullwidth dot too) and drops the API version;
/// then asks whether what is left starts with an [`IDENTITY`] route.
pub fn upstream_names_identity(path: &str) -> bool {
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
        .replace(['\\', ';', '?', '#'], "/")
        .replace(['\u{ff0f}', '\u{2215}', '\u{2044}'], "/")
        .replace('\u{ff0e}', ".");
    let mut segments: Vec<String> = Vec::new();
    for segment in text.split('/') {
        let segment =
            segment.trim_matches(|c: char| c.is_whitespace() || c.is_control() || c == '\u{200b}');
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment.to_string()),
        }
    }
    let rest = match segments.split_first() {
        Some((_version, rest)) => rest,
        None => return false,
    };
    IDENTITY.iter().any(|prefix| {
        rest.len() >= prefix.len() && rest.iter().zip(prefix.iter()).all(|(s, p)| s == p)
    })
}

/// What every path must satisfy, whatever it is: `canonicalize` is
/// idempotent on its own output, re-encoding does not change the route, and
/// nothing passed through names an identity route (by the oracle, by
/// `names_identity`, and as plain lowercased text) or holds anything but
/// plain ASCII. `Err` says which, about which path.
pub fn check_path(raw: &str, passthrough: &[String]) -> Result<(), String> {
    let Ok(path) = canonicalize(raw) else {
        return Ok(());
    };
    let route = classify(&path, passthrough);
    let uri = path.to_uri_path();
    let again = canonicalize(&uri)
        .map_err(|e| format!("canonicalize is idempotent: {raw:?} -> {uri:?}: {e}"))?;
    if again != path {
        return Err(format!(
            "canonicalize is idempotent: {raw:?} -> {uri:?}: {again:?} != {path:?}"
        ));
    }
    let reclassified = classify(&again, passthrough);
    if reclassified != route {
        return Err(format!(
            "classification survives re-encoding: {raw:?}: {reclassified:?} != {route:?}"
        ));
    }
    let Route::Container(ContainerRoute::Passthrough(forwarded)) = &route else {
        return Ok(());
    };
    let passes = |why: &str| Err(format!("{raw:?} passes through as {forwarded:?}{why}"));
    if upstream_names_identity(forwarded) {
        return passes(", which names identity");
    }
    let forwarded_path: CanonicalPath =
        canonicalize(forwarded).map_err(|e| format!("{raw:?} -> {forwarded:?}: {e}"))?;
    let rest = forwarded_path
        .segments
        .get(1..)
        .unwrap_or_default()
        .join("/");
    if !(rest.is_empty() || !names_identity(&rest) || is_directory_index(&rest)) {
        return passes(", which names_identity refuses");
    }
    // After the version, lowercased, compared segment-aligned.
    let after_version = forwarded[1..].split_once('/').map_or("", |(_, rest)| rest);
    let after_version = format!("{}/", after_version.to_ascii_lowercase());
    if IDENTITY
        .iter()
        .any(|identity| after_version.starts_with(&format!("{}/", identity.join("/"))))
    {
        return passes(", which starts with an identity route");
    }
    if !forwarded
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\')
    {
        return passes(": not plain ASCII");
    }
    Ok(())
}

/// `meta-data` and `dynamic` are directory listings: they name identity
/// routes as prefixes but return only names.
fn is_directory_index(rest: &str) -> bool {
    matches!(rest, "meta-data" | "dynamic")
}
