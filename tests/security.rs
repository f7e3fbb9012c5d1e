//! Hostile input: the identity-path corpus and the classifier properties.
//!
//! * `corpus_*`: every line of `tests/corpus/identity-requests.txt` is sent
//!   to the proxy, in process (through `Imds::respond`, as `tests/raw.rs`
//!   does) and through the real listener (`server::serve`, so hyper parses
//!   the raw bytes), against a metadata service that answers a canary on
//!   every path. No answer may carry the canary, and nothing may be asked of
//!   the metadata service, except the `@forwards` lines and each only as
//!   exactly its harmless path. Every path that does reach it is also checked
//!   against an independent, deliberately paranoid idea of "names the host's
//!   identity" (`support::identity`, the oracle the fuzz target shares).
//! * `properties`: proptest over paths built from an alphabet rich in the
//!   characters and words that matter. `PROPTEST_CASES=2000000` makes a long
//!   run (see docs/security.md); `fuzz/` holds the same property for
//!   `cargo fuzz`, from the same file.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ec2metaproxy::config::DEFAULT_PASSTHROUGH;
use ec2metaproxy::imds::path::{canonicalize, names_identity};
use ec2metaproxy::server::Limits;

use crate::support::corpus::{corpus, Case};
use crate::support::docker::container;
use crate::support::exchange::exchange;
use crate::support::host::{Host, LOOPBACK, WEB_IP};
use crate::support::identity::upstream_names_identity;
use crate::support::upstream::CANARY;
use crate::support::NOW_SECS;

/// What the proxy answered, and what the metadata service was asked meanwhile.
struct Outcome {
    status: u16,
    body: String,
    upstream: BTreeMap<String, usize>,
}

/// Checks one answer; returns a failure description.
fn judge(case: &Case, how: &str, outcome: &Outcome) -> Option<String> {
    let asked: Vec<&String> = outcome.upstream.keys().collect();
    let identity_asked: Vec<&&String> = asked
        .iter()
        .filter(|p| upstream_names_identity(p))
        .collect();
    let problem = if !identity_asked.is_empty() {
        Some(format!(
            "the metadata service was asked for identity paths {identity_asked:?}"
        ))
    } else {
        match &case.forwards {
            None if outcome.body.contains(CANARY) => {
                Some("the answer carries the metadata service's canary".to_string())
            }
            None if !asked.is_empty() => {
                Some(format!("the metadata service was asked for {asked:?}"))
            }
            Some(path) if asked != [path] || outcome.upstream[path] != 1 => Some(format!(
                "expected the metadata service to be asked for {path:?} once, was asked {:?}",
                outcome.upstream
            )),
            Some(path) if outcome.body != format!("{CANARY} {path}") => {
                Some(format!("expected the canary of {path:?} to be relayed"))
            }
            _ => None,
        }
    };
    problem.map(|problem| {
        let mut body = outcome.body.clone();
        body.truncate(400);
        format!(
            "{how}, corpus line {}: {problem}\n  request: {}\n  status:  {}\n  body:    {body:?}",
            case.line, case.text, outcome.status
        )
    })
}

/// A summary printed with `--nocapture`: how the corpus was answered.
fn tally(statuses: &BTreeMap<u16, usize>) -> String {
    statuses
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn corpus_is_large_and_well_formed() {
    let cases = corpus();
    assert!(cases.len() >= 300, "{} requests", cases.len());
    let targets: std::collections::HashSet<_> = cases
        .iter()
        .map(|c| (&c.method, &c.target, &c.headers, c.version))
        .collect();
    assert_eq!(targets.len(), cases.len(), "no duplicate requests");
    for case in &cases {
        if let Some(path) = &case.forwards {
            assert!(
                !upstream_names_identity(path),
                "line {}: @forwards names identity",
                case.line
            );
        }
    }
}

#[tokio::test]
async fn corpus_in_process_never_reaches_the_hosts_identity() {
    let host = Host::standard().start().await;
    let token = host.token(WEB_IP, 600, NOW_SECS);
    let mut failures = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut unparsed = 0;
    let cases = corpus();
    for case in &cases {
        let before = host.upstream.snapshot();
        let Some(answer) = host.respond_raw(WEB_IP, &case.bytes(&token)).await else {
            unparsed += 1;
            continue;
        };
        let (status, body) = (answer.status, answer.body);
        *statuses.entry(status).or_insert(0) += 1;
        let outcome = Outcome {
            status,
            body,
            upstream: host.upstream.asked_since(&before),
        };
        failures.extend(judge(case, "in process", &outcome));
    }
    let asked = host.upstream.asked_since(&HashMap::new());
    println!(
        "corpus in process: {} requests, {unparsed} not parseable (listener run covers them); {}; \
         metadata service asked {} times (only @forwards lines), {} of them for identity",
        cases.len(),
        tally(&statuses),
        asked.values().sum::<usize>(),
        asked.keys().filter(|p| upstream_names_identity(p)).count()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn corpus_through_the_listener_never_reaches_the_hosts_identity() {
    let host = Host::standard().loopback("local").start().await;
    let limits = Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let proxy = host.listen(limits).await;
    corpus_through(&host, proxy.addr, LOOPBACK, "the listener").await;
    let _ = proxy.stop.send(());
}

/// The same corpus from an IPv6 caller, as a container on an IPv6 network
/// sends it to [fd00:ec2::254].
#[tokio::test]
async fn corpus_over_ipv6_never_reaches_the_hosts_identity() {
    let host = Host::standard()
        .container(container(
            "local6",
            "::1",
            &[("ec2metaproxy.RoleAlias", "web")],
        ))
        .start()
        .await;
    let proxy = host.listen_all(&["[::1]:0"]).await;
    corpus_through(&host, proxy.addrs[0], "::1", "an IPv6 listener").await;
}

/// Sends the corpus to `addr` as `caller` (the address the test connects
/// from), with `caller`'s token.
async fn corpus_through(host: &Host, addr: std::net::SocketAddr, caller: &str, how: &str) {
    let token = host.token(caller, 600, NOW_SECS);
    let mut failures = Vec::new();
    let mut statuses = BTreeMap::new();
    let cases = corpus();
    for case in &cases {
        let before = host.upstream.snapshot();
        let answer = exchange(addr, &case.bytes(&token)).await.answer;
        let (status, body) = (answer.status, answer.body);
        *statuses.entry(status).or_insert(0) += 1;
        let outcome = Outcome {
            status,
            body,
            upstream: host.upstream.asked_since(&before),
        };
        failures.extend(judge(case, how, &outcome));
    }
    let asked = host.upstream.asked_since(&HashMap::new());
    println!(
        "corpus through {how}: {} requests; {}; \
         metadata service asked {} times (only @forwards lines), {} of them for identity",
        cases.len(),
        tally(&statuses),
        asked.values().sum::<usize>(),
        asked.keys().filter(|p| upstream_names_identity(p)).count()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// With the widest list a config accepts for this corpus (every prefix of
/// every canonical corpus path that does not cover an identity route, e.g.
/// `meta-data/iamx`, `meta-data/instance-id/x`; user-data left out, since the
/// oracle counts it as a secret), the deny-list alone must hold: whatever
/// reaches the metadata service names no identity route.
#[tokio::test]
async fn corpus_with_a_wide_passthrough_list_still_never_reaches_identity() {
    let mut wide: std::collections::BTreeSet<String> =
        DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect();
    for case in corpus() {
        let target = String::from_utf8_lossy(&case.target).into_owned();
        let target = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]).to_string(),
            None => target,
        };
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let Ok(path) = canonicalize(path) else {
            continue;
        };
        let rest = path.segments.get(1..).unwrap_or_default();
        for n in 1..=rest.len() {
            let prefix = rest[..n].join("/");
            // What the config would refuse, and user-data.
            if !names_identity(&prefix)
                && !prefix.contains("..")
                && !prefix.to_ascii_lowercase().starts_with("user-data")
            {
                wide.insert(prefix);
            }
        }
    }
    let wide: Vec<String> = wide.into_iter().collect();
    let list = serde_json::to_string(&wide).unwrap();
    let host = Host::standard()
        .set(&format!(r#"{{"passthrough": {list}}}"#))
        .start()
        .await;
    let token = host.token(WEB_IP, 600, NOW_SECS);
    let mut failures = Vec::new();
    let mut forwarded = 0;
    for case in &corpus() {
        let before = host.upstream.snapshot();
        let Some(answer) = host.respond_raw(WEB_IP, &case.bytes(&token)).await else {
            continue;
        };
        let (status, body) = (answer.status, answer.body);
        let upstream = host.upstream.asked_since(&before);
        forwarded += upstream.values().sum::<usize>();
        let identity: Vec<_> = upstream
            .keys()
            .filter(|p| upstream_names_identity(p))
            .collect();
        let relayed_identity = body
            .strip_prefix("CANARY ")
            .is_some_and(upstream_names_identity);
        if !identity.is_empty() || relayed_identity {
            failures.push(format!(
                "corpus line {}: {}\n  status {status}, asked {upstream:?}, body {body:?}",
                case.line, case.text
            ));
        }
    }
    println!("corpus with a passthrough list of {} prefixes: {forwarded} requests reached the metadata service, none for identity", wide.len());
    assert!(
        forwarded > 0,
        "the wide list let nothing through: the test proves nothing"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_oracle_recognises_identity_spellings() {
    for path in [
        "/latest/meta-data/iam/info",
        "/latest/meta-data/instance-id/..%20/iam/info",
        "/latest/meta-data/instance-id/%252e%252e/iam/info",
        "/latest/Meta-Data/IAM/security-credentials/x",
        "/2016-09-02/dynamic/instance-identity/pkcs7",
        "/latest/meta-data/instance-id\\..\\identity-credentials/ec2/info",
        "/latest/user-data",
        "/latest/meta-data/instance-id/%EF%BC%8E%EF%BC%8E/iam/info",
        // A zero-width space is trimmed like whitespace (the fuzz target's
        // copy did not trim it).
        "/latest/meta-data/instance-id/..%E2%80%8B/iam/info",
    ] {
        assert!(upstream_names_identity(path), "{path}");
    }
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/meta-data/iamx",
        "/latest/dynamic/instance-identity/document",
        "/latest/meta-data/",
    ] {
        assert!(!upstream_names_identity(path), "{path}");
    }
}

/// The fuzz target (which cannot be built here: libfuzzer-sys is not
/// vendored) judges with the same oracle and properties: it compiles
/// `tests/support/identity.rs` in through `#[path]` and keeps no copy of its
/// own, and that file needs nothing of this crate, so the fuzz crate can
/// build it.
#[test]
fn support_is_shared_with_the_fuzz_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("fuzz/fuzz_targets/classify.rs");
    let fuzz = std::fs::read_to_string(&target).unwrap();
    let include = "#[path = \"../../tests/support/identity.rs\"]\nmod identity;";
    assert!(
        fuzz.contains(include),
        "{} lacks {include:?}",
        target.display()
    );
    let included = target
        .parent()
        .unwrap()
        .join("../../tests/support/identity.rs");
    assert_eq!(
        std::fs::canonicalize(included).unwrap(),
        root.join("tests/support/identity.rs")
    );
    assert!(
        fuzz.contains("identity::check_path("),
        "the fuzz target runs the shared properties"
    );
    for own in [
        "fn upstream_names_identity",
        "const IDENTITY",
        "percent_decode",
    ] {
        assert!(!fuzz.contains(own), "the fuzz target keeps its own {own:?}");
    }
    let shared = std::fs::read_to_string(root.join("tests/support/identity.rs")).unwrap();
    for line in shared
        .lines()
        .filter(|l| l.trim_start().starts_with("use "))
    {
        assert!(
            line.contains("ec2metaproxy::")
                || line.contains("percent_encoding::")
                || line.contains("std::"),
            "tests/support/identity.rs uses what the fuzz crate lacks: {line}"
        );
    }
    for word in ["crate::", "super::"] {
        assert!(
            !shared.contains(word),
            "tests/support/identity.rs reaches into the test crate ({word})"
        );
    }
}

/// Properties of `canonicalize` and `classify` over hostile paths.
mod properties {
    use super::*;
    use crate::support::identity::check_path;
    use proptest::prelude::*;

    /// Pieces paths are built from: separators, dots, escapes, parameters, and
    /// the words of the routes that matter.
    const PIECES: &[&str] = &[
        "/",
        "/",
        "/",
        "/",
        ".",
        "..",
        "%",
        "%2",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%25",
        "%5c",
        "%3b",
        "%00",
        "%20",
        "%09",
        "%69",
        "%49",
        "%61",
        "%6d",
        "%c0%ae",
        "%ef%bc%8f",
        ";",
        ";x=1",
        "?",
        "#",
        "\\",
        " ",
        "\t",
        "~",
        "i",
        "a",
        "m",
        "I",
        "A",
        "M",
        "e",
        "2",
        "5",
        "6",
        "9",
        "f",
        "F",
        "c",
        "-",
        "iam",
        "IAM",
        "Iam",
        "info",
        "meta-data",
        "Meta-Data",
        "dynamic",
        "latest",
        "LATEST",
        "2016-09-02",
        "1.0",
        "identity-credentials",
        "security-credentials",
        "security-credentials-extended",
        "ec2",
        "ec2-instance",
        "instance-identity",
        "document",
        "pkcs7",
        "signature",
        "rsa2048",
        "rsa",
        "fws",
        "user-data",
        "instance-id",
        "placement",
        "region",
        "HostRole",
        "Web",
        "api",
        "token",
        "\u{ff0f}",
        "\u{ff0e}",
        "\u{0456}",
    ];

    fn passthrough() -> Vec<String> {
        DEFAULT_PASSTHROUGH.iter().map(|s| s.to_string()).collect()
    }

    fn hostile_path() -> impl Strategy<Value = String> {
        let piece = proptest::sample::select(PIECES);
        (
            prop_oneof![
                Just("/latest/"),
                Just("/"),
                Just("//"),
                Just("/2021-03-23/"),
                Just("")
            ],
            proptest::collection::vec(piece, 0..24),
        )
            .prop_map(|(start, pieces)| {
                let mut path = start.to_string();
                for piece in pieces {
                    path.push_str(piece);
                }
                path
            })
    }

    /// What every path must satisfy (`support::identity::check_path`, which
    /// the fuzz target runs too); shared by both strategies.
    fn check(raw: &str) -> Result<(), TestCaseError> {
        check_path(raw, &passthrough()).map_err(TestCaseError::fail)
    }

    proptest! {
        // PROPTEST_CASES (read by the default config) sets the number of cases.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "tests/corpus/proptest-regressions.txt",
                ),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn hostile_paths(raw in hostile_path()) {
            check(&raw)?;
        }

        #[test]
        fn arbitrary_strings(raw in "/[^?]{0,80}") {
            check(&raw)?;
        }
    }
}
