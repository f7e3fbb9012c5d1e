//! The IMDS protocol facts of docs/ARCHITECTURE.md, each pinned on a raw
//! request: the bytes a client sends in, the whole response out. Each one
//! broke a real SDK somewhere when it was wrong.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use ec2metaproxy::broker::Caller;
use ec2metaproxy::imds::token::{Holder, TokenKey};
use ec2metaproxy::platform::mapping::StaticMappings;
use ec2metaproxy::server::Limits;

use crate::support::docker::container;
use crate::support::exchange::{exchange, Answer};
use crate::support::host::{Host, PLAIN_IP, STRAY_IP, WEB_IP};
use crate::support::sts::{SECRET, SESSION_TOKEN};
use crate::support::{ip, now, NOW_SECS};

/// Every request's future is moved into hyper's connection state; the
/// rare paths (STS call, upstream fetch, token, Docker lookups) are boxed so
/// that their size is not copied on every cached answer (it was 1536 bytes).
#[tokio::test]
async fn the_request_future_stays_small() {
    let host = Host::standard().start().await;
    let (parts, ()) = http::Request::get("/latest/meta-data/iam/security-credentials/")
        .body(())
        .unwrap()
        .into_parts();
    let caller = Caller::address(ip("172.17.0.2"));
    let future = host.imds.respond(&caller, &parts, now());
    let size = std::mem::size_of_val(&future);
    assert!(size <= 1024, "the respond future is {size} bytes");
    drop(future);
}

/// The headers of every plain answer.
fn text_headers() -> Vec<(String, String)> {
    vec![("content-type".into(), "text/plain".into())]
}

/// The fixed page IMDS answers a refusal with: never a detail.
fn page(status: u16) -> &'static str {
    match status {
        400 => "400 - Bad Request",
        401 => "401 - Unauthorized",
        403 => "403 - Forbidden",
        404 => "404 - Not Found",
        405 => "405 - Method Not Allowed",
        503 => "503 - Service Unavailable",
        _ => unreachable!(),
    }
}

/// `answer` refuses with `status` and its fixed page.
fn assert_refused(answer: &Answer, status: u16, description: &str) {
    assert_eq!(answer.status, status, "{description}: {answer:#?}");
    assert!(
        answer.body.contains(page(status)),
        "{description}: {answer:#?}"
    );
}

mod token {
    use super::*;

    /// aws-config fails without the TTL echo; old Go and Ruby drop to IMDSv1.
    #[tokio::test]
    async fn put_returns_a_token_and_echoes_the_ttl() {
        let host = Host::standard().start().await;
        let answer = host
            .send(WEB_IP, "PUT /latest/api/token HTTP/1.1\nHost: 169.254.169.254\nX-aws-ec2-metadata-token-ttl-seconds: 21600\n")
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.headers,
            vec![
                ("content-type".into(), "text/plain".into()),
                (
                    "x-aws-ec2-metadata-token-ttl-seconds".into(),
                    "21600".into()
                ),
            ]
        );
        assert!(host.token_is_valid(&answer.body, WEB_IP, NOW_SECS + 21_599));
        assert!(!host.token_is_valid(&answer.body, WEB_IP, NOW_SECS + 21_600));
    }

    /// botocore and aws-config treat 400 as final; a bad TTL must not be retried.
    #[tokio::test]
    async fn ttl_missing_or_out_of_bounds_is_400() {
        let host = Host::standard().start().await;
        for ttl in [
            None,
            Some("0"),
            Some("21601"),
            Some("abc"),
            Some("-5"),
            Some(""),
        ] {
            let header = ttl.map_or(String::new(), |t| {
                format!("X-aws-ec2-metadata-token-ttl-seconds: {t}\n")
            });
            let answer = host
                .send(WEB_IP, &format!("PUT /latest/api/token HTTP/1.1\n{header}"))
                .await;
            assert_refused(&answer, 400, &format!("ttl {ttl:?}"));
        }
    }

    #[tokio::test]
    async fn put_with_x_forwarded_for_in_any_casing_is_403() {
        let host = Host::standard().start().await;
        for name in ["X-Forwarded-For", "x-forwarded-for", "X-FORWARDED-FOR"] {
            let answer = host
                .send(WEB_IP, &format!("PUT /latest/api/token HTTP/1.1\nX-aws-ec2-metadata-token-ttl-seconds: 60\n{name}: 1.2.3.4\n"))
                .await;
            assert_refused(&answer, 403, name);
        }
    }

    #[tokio::test]
    async fn put_on_a_dated_path_is_403() {
        let host = Host::standard().start().await;
        let answer = host
            .send(
                WEB_IP,
                "PUT /2021-03-23/api/token HTTP/1.1\nX-aws-ec2-metadata-token-ttl-seconds: 60\n",
            )
            .await;
        assert_refused(&answer, 403, "dated token path");
    }

    #[tokio::test]
    async fn get_on_the_token_path_is_405() {
        let host = Host::standard().start().await;
        let answer = host.send(WEB_IP, "GET /latest/api/token HTTP/1.1\n").await;
        assert_refused(&answer, 405, "GET token");
        assert_eq!(answer.header("allow"), Some("PUT"));
    }

    #[tokio::test]
    async fn a_bad_expired_or_borrowed_token_is_401() {
        let host = Host::standard().start().await;
        let cases = [
            ("garbage", "garbage".to_string()),
            ("expired", host.token(WEB_IP, 60, NOW_SECS - 61)),
            ("another container's", host.token_for(PLAIN_IP)),
            (
                "another key's",
                TokenKey::random().issue(Holder::address(ip(WEB_IP)), 60, NOW_SECS),
            ),
        ];
        for (description, token) in cases {
            let answer = host
                .send(WEB_IP, &format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\nX-aws-ec2-metadata-token: {token}\n"))
                .await;
            assert_refused(&answer, 401, description);
        }
    }

    /// A container that asks in its first milliseconds gets its token
    /// before the index knows it, then lists roles with it once it does.
    #[tokio::test]
    async fn a_token_minted_before_the_caller_was_known_is_accepted_once_it_is() {
        let host = Host::standard().start().await;
        let early = host
            .tokens
            .issue(Holder::address(ip(WEB_IP)), 600, NOW_SECS);
        let answer = host
            .send(WEB_IP, &format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\nX-aws-ec2-metadata-token: {early}\n"))
            .await;
        assert_eq!(answer.status, 200, "{answer:#?}");
    }

    /// A 401 here would make Go and JS fetch a new token, which is refused
    /// with 403: a loop. So a token GET with X-Forwarded-For is 403 at once.
    #[tokio::test]
    async fn get_with_a_token_and_x_forwarded_for_is_403_not_401() {
        let host = Host::standard().start().await;
        let token = host.token_for(WEB_IP);
        let answer = host
            .send(WEB_IP, &format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\nX-aws-ec2-metadata-token: {token}\nX-Forwarded-For: 10.0.0.1\n"))
            .await;
        assert_refused(&answer, 403, "token + XFF");
    }

    #[tokio::test]
    async fn imdsv1_is_served_unless_require_token_is_set() {
        let host = Host::standard().start().await;
        let v1 = host
            .send(
                WEB_IP,
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_eq!(v1.status, 200);
        let strict = Host::standard()
            .set(r#"{"requireToken": true}"#)
            .start()
            .await;
        let refused = strict
            .send(
                WEB_IP,
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_refused(&refused, 401, "requireToken");
        let token = strict.token_for(WEB_IP);
        let v2 = strict
            .send(WEB_IP, &format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\nX-aws-ec2-metadata-token: {token}\n"))
            .await;
        assert_eq!(v2.status, 200);
    }
}

mod credentials {
    use super::*;

    /// aws-config uses the listing verbatim as a URL segment and panics on `\n`.
    #[tokio::test]
    async fn listing_is_the_role_name_without_a_newline_with_or_without_slash() {
        let host = Host::standard().start().await;
        for path in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials",
            "/latest/meta-data/iam/security-credentials-extended/",
            "/2016-09-02/meta-data/iam/security-credentials/",
        ] {
            let answer = host.send(WEB_IP, &format!("GET {path} HTTP/1.1\n")).await;
            assert_eq!(
                answer,
                Answer {
                    status: 200,
                    headers: text_headers(),
                    body: "Web".into()
                },
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn credentials_document_is_whole_and_exact() {
        let host = Host::standard().start().await;
        let expected = format!(
            "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2026-11-22T20:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAEXAMPLE\",\n  \"SecretAccessKey\" : \"{SECRET}\",\n  \"Token\" : \"{SESSION_TOKEN}\",\n  \"Expiration\" : \"2026-11-22T21:00:00Z\"\n}}"
        );
        for path in [
            "/latest/meta-data/iam/security-credentials/Web",
            "/latest/meta-data/iam/security-credentials/Web/",
            "/2016-09-02/meta-data/iam/security-credentials/Web",
        ] {
            let answer = host
                .send(
                    WEB_IP,
                    &format!("GET {path} HTTP/1.1\nAccept: application/json\n"),
                )
                .await;
            assert_eq!(
                answer,
                Answer {
                    status: 200,
                    headers: text_headers(),
                    body: expected.clone()
                },
                "{path}"
            );
        }
        let calls = host.sts.calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "one AssumeRole for one key");
        assert_eq!(
            calls[0].role_arn.as_str(),
            "arn:aws:iam::222222222222:role/team/Web"
        );
        assert_eq!(&*calls[0].session_name, "web-web012345678");
    }

    /// Go v2, Java v2, Ruby, PHP and Kotlin ask here first; a 403 or 500
    /// instead of a document (or a 404) breaks them.
    #[tokio::test]
    async fn extended_route_adds_the_roles_account() {
        let host = Host::standard().start().await;
        let answer = host
            .send(
                WEB_IP,
                "GET /latest/meta-data/iam/security-credentials-extended/Web HTTP/1.1\n",
            )
            .await;
        assert_eq!(answer.status, 200);
        let document: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(document["AccountId"], "222222222222");
        assert_eq!(document["Code"], "Success");
        assert!(answer.body.ends_with("\"AccountId\" : \"222222222222\"\n}"));
    }

    #[tokio::test]
    async fn unlabelled_container_gets_the_default_role() {
        let host = Host::standard().start().await;
        let answer = host
            .send(
                PLAIN_IP,
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_eq!(answer.body, "Default");
        let doc = host
            .send(
                PLAIN_IP,
                "GET /latest/meta-data/iam/security-credentials/Default HTTP/1.1\n",
            )
            .await;
        assert_eq!(doc.status, 200);
    }

    /// 404, not 500: a 500 burns the client's retries; and never the default role.
    #[tokio::test]
    async fn no_credentials_for_strangers_unknown_aliases_or_other_roles() {
        let host = Host::standard().start().await;
        let cases = [
            (
                "an unknown alias",
                STRAY_IP,
                "/latest/meta-data/iam/security-credentials/",
            ),
            (
                "an unknown alias asking for the default",
                STRAY_IP,
                "/latest/meta-data/iam/security-credentials/Default",
            ),
            (
                "an address that is no container",
                "172.30.0.99",
                "/latest/meta-data/iam/security-credentials/",
            ),
            (
                "another role's name",
                WEB_IP,
                "/latest/meta-data/iam/security-credentials/Default",
            ),
            (
                "the role name in another case",
                WEB_IP,
                "/latest/meta-data/iam/security-credentials/web",
            ),
            (
                "trailing junk after the role",
                WEB_IP,
                "/latest/meta-data/iam/security-credentials/Web/x",
            ),
            (
                "the host's identity credentials",
                WEB_IP,
                "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            ),
        ];
        for (description, caller, path) in cases {
            let answer = host.send(caller, &format!("GET {path} HTTP/1.1\n")).await;
            assert_refused(&answer, 404, description);
        }
        assert!(host.sts.calls.lock().unwrap().is_empty());
        assert_eq!(
            host.upstream.get_hits(),
            0,
            "nothing reached the metadata service"
        );
    }

    #[tokio::test]
    async fn session_policy_label_reaches_sts() {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
        let narrowed = container("narrow", "172.30.0.5", &[("ec2metaproxy.Policy", policy)]);
        let host = Host::standard().container(narrowed).start().await;
        let answer = host
            .send(
                "172.30.0.5",
                "GET /latest/meta-data/iam/security-credentials/Default HTTP/1.1\n",
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            host.sts.calls.lock().unwrap()[0].policy.as_deref(),
            Some(policy)
        );
    }

    /// The failure is logged with its detail; the caller sees a fixed page.
    #[tokio::test]
    async fn sts_failure_is_a_5xx_without_internal_detail() {
        let host = Host::standard().start().await;
        *host.sts.fail.lock().unwrap() = true;
        let answer = host
            .send(
                WEB_IP,
                "GET /latest/meta-data/iam/security-credentials/Web HTTP/1.1\n",
            )
            .await;
        assert_refused(&answer, 503, "STS down");
        assert!(!answer.body.contains("internal detail") && !answer.body.contains("AccessDenied"));
    }

    #[tokio::test]
    async fn iam_info_describes_the_containers_role_never_the_hosts() {
        let host = Host::standard().start().await;
        let answer = host
            .send(WEB_IP, "GET /latest/meta-data/iam/info HTTP/1.1\n")
            .await;
        assert_eq!(answer.status, 200);
        let info: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            info["InstanceProfileArn"],
            "arn:aws:iam::222222222222:instance-profile/team/Web"
        );
        assert_eq!(host.upstream.get_hits(), 0);
    }
}

mod routing {
    use super::*;

    #[tokio::test]
    async fn allowed_metadata_passes_through_with_the_proxys_own_token() {
        let host = Host::standard().start().await;
        let answer = host
            .send(WEB_IP, "GET /latest/meta-data/instance-id HTTP/1.1\n")
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "CANARY /latest/meta-data/instance-id");
        assert_eq!(host.upstream.hits("/latest/api/token"), 1);
        host.send(WEB_IP, "GET /latest/meta-data/placement/region HTTP/1.1\n")
            .await;
        assert_eq!(
            host.upstream.hits("/latest/api/token"),
            1,
            "the upstream token is reused"
        );
    }

    #[tokio::test]
    async fn the_upstream_meta_data_listing_leaves_out_identity_credentials() {
        let host = Host::standard().start().await;
        host.upstream
            .list("ami-id\nidentity-credentials/\niam/\ninstance-id");
        let answer = host.send(WEB_IP, "GET /latest/meta-data/ HTTP/1.1\n").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ami-id\niam/\ninstance-id");
    }

    #[tokio::test]
    async fn identity_spellings_never_reach_the_metadata_service() {
        let host = Host::standard().start().await;
        for path in [
            "/latest/meta-data/iam/security-credentials/HostRole",
            "/latest/meta-data//iam/security-credentials/HostRole",
            "/latest/meta-data/IAM/security-credentials/HostRole",
            "/latest/meta-data/%69am/security-credentials/HostRole",
            "/latest/meta-data/iam/security-credentials;/HostRole",
            "/latest/meta-data/instance-id/../iam/info",
            "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "/latest/dynamic/instance-identity/pkcs7",
            "/latest/user-data",
        ] {
            let answer = host.send(WEB_IP, &format!("GET {path} HTTP/1.1\n")).await;
            assert!(!answer.body.contains("CANARY"), "{path}: {answer:#?}");
        }
        assert_eq!(host.upstream.get_hits(), 0);
    }

    /// Outside EC2 (`"metadataURL": null`) SDKs looking for a region or an
    /// identity document find one, and nothing else hangs or leaks.
    #[tokio::test]
    async fn with_no_metadata_service_a_local_tree_answers() {
        let host = Host::standard()
            .set(r#"{"metadataURL": null, "localMetadata": {"region": "eu-west-1"}}"#)
            .start()
            .await;
        let region = host
            .send(WEB_IP, "GET /latest/meta-data/placement/region HTTP/1.1\n")
            .await;
        assert_eq!(
            region,
            Answer {
                status: 200,
                headers: text_headers(),
                body: "eu-west-1".into()
            }
        );
        let identity = host
            .send(
                WEB_IP,
                "GET /latest/dynamic/instance-identity/document HTTP/1.1\n",
            )
            .await;
        let document: serde_json::Value = serde_json::from_str(&identity.body).unwrap();
        assert_eq!(document["region"], "eu-west-1");
        assert_eq!(
            document["accountId"], "111111111111",
            "the default role's account"
        );
        let unknown = host
            .send(WEB_IP, "GET /latest/meta-data/public-ipv4 HTTP/1.1\n")
            .await;
        assert_refused(&unknown, 404, "not in the local tree");
        let listing = host
            .send(
                WEB_IP,
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_eq!(listing.body, "Web");
        assert_eq!(host.upstream.get_hits(), 0);
    }

    /// `roleMappingFile` answers addresses that are not Docker containers.
    #[tokio::test]
    async fn statically_mapped_addresses_get_their_aliases_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mappings.json");
        std::fs::write(&path, r#"{"192.0.2.10": "web", "192.0.2.11": "nope"}"#).unwrap();
        let mappings = Arc::new(StaticMappings::load(&path).unwrap());
        let host = Host::standard().mappings(mappings).start().await;
        let listing = host
            .send(
                "192.0.2.10",
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_eq!(listing.body, "Web");
        let unknown = host
            .send(
                "192.0.2.11",
                "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\n",
            )
            .await;
        assert_refused(&unknown, 404, "a mapping to an unknown alias");
    }

    #[tokio::test]
    async fn ambiguous_paths_are_400() {
        let host = Host::standard().start().await;
        for path in [
            "/latest/meta-data/iam%2Fsecurity-credentials/",
            "/latest/meta-data/%5Ciam",
            "/latest/meta-data/%00",
            "/latest/meta-data/%C0%AE%C0%AE/iam",
        ] {
            let answer = host.send(WEB_IP, &format!("GET {path} HTTP/1.1\n")).await;
            assert_refused(&answer, 400, path);
        }
    }

    #[tokio::test]
    async fn only_get_head_and_the_token_put_are_methods() {
        let host = Host::standard().start().await;
        for method in ["POST", "DELETE", "PATCH", "PUT", "OPTIONS"] {
            let answer = host
                .send(
                    WEB_IP,
                    &format!("{method} /latest/meta-data/iam/security-credentials/ HTTP/1.1\n"),
                )
                .await;
            assert_refused(&answer, 405, method);
            assert_eq!(answer.header("allow"), Some("GET, HEAD"));
        }
    }
}

/// Through the real listener: what only the server layer can get wrong.
///
/// These stay on the real clock, although hyper's timers are tokio time: a
/// paused clock jumps to the next timer whenever the runtime finds nothing
/// ready, and on a loaded machine the kernel may hand over a loopback
/// packet (an accept, a close) a moment after the runtime looked. Tried:
/// 3 failures in 60 runs of the whole suite with 16 test threads.
mod server {
    use super::*;

    async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        start_with(Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        })
        .await
    }

    /// The standard host with a caller on 127.0.0.1 (`local`, alias `web`)
    /// and one on 127.0.0.2 (`neighbour`, the default role), listening.
    async fn start_with(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let host = Host::standard()
            .loopback("local")
            .container(container("neighbour", "127.0.0.2", &[]))
            .start()
            .await;
        let proxy = host.listen(limits).await;
        (proxy.addr, proxy.stop)
    }

    #[tokio::test]
    async fn head_has_no_body_and_every_response_has_a_request_id() {
        let (addr, _stop) = start().await;
        let raw = exchange(addr, b"HEAD /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.raw;
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.contains("content-length: 3\r\n"), "{raw}");
        assert!(raw.ends_with("\r\n\r\n"), "no body after the head: {raw:?}");
        let id = raw
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("x-request-id header");
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }

    #[tokio::test]
    async fn keep_alive_and_pipelining_answer_every_request_in_order() {
        let (addr, _stop) = start().await;
        let one = "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n";
        let token = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\r\n";
        let last = "GET /latest/meta-data/iam/security-credentials HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let raw = exchange(addr, format!("{one}{token}{last}").as_bytes())
            .await
            .raw;
        assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");
        assert!(raw.contains("x-aws-ec2-metadata-token-ttl-seconds: 5"));
    }

    #[tokio::test]
    async fn http_1_0_without_host_is_served() {
        let (addr, _stop) = start().await;
        let raw = exchange(
            addr,
            b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.0\r\n\r\n",
        )
        .await
        .raw;
        assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");
        assert!(raw.ends_with("\r\n\r\nWeb"), "{raw}");
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused() {
        let (addr, _stop) = start().await;
        let big = format!(
            "GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let raw = exchange(addr, big.as_bytes()).await.raw;
        assert!(raw.starts_with("HTTP/1.1 431 "), "{raw:?}");
    }

    #[tokio::test]
    async fn a_request_head_that_never_finishes_is_closed() {
        let (addr, _stop) = start().await;
        let started = std::time::Instant::now();
        let raw = exchange(addr, b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n")
            .await
            .raw;
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(3),
            "closed after {waited:?}: {raw:?}"
        );
        assert!(
            waited >= Duration::from_millis(400),
            "closed after {waited:?}"
        );
    }

    /// hyper starts its header-read timer whenever it waits for a request
    /// head, so an idle keep-alive connection is closed on the same bound.
    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _stop) = start().await;
        let started = std::time::Instant::now();
        let raw = exchange(
            addr,
            b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .raw;
        assert!(raw.starts_with("HTTP/1.1 200 OK"), "{raw}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    }

    /// 100 slow connections from one caller leave another caller served at
    /// once, even when they are as many as the whole server's cap.
    #[tokio::test]
    async fn one_callers_slow_connections_cannot_starve_another() {
        let (addr, _stop) = start_with(Limits {
            max_connections: 100,
            max_connections_per_ip: 64,
            ..Limits::default()
        })
        .await;
        let mut hogs = Vec::new();
        for _ in 0..100 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let _ = stream
                .write_all(b"GET /latest/meta-data/ HTTP/1.1\r\n")
                .await;
            hogs.push(stream);
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let started = std::time::Instant::now();
        let mut other = socket.connect(addr).await.unwrap();
        other
            .write_all(b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(1), other.read_to_string(&mut answer))
            .await
            .expect("served within a second")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("Default"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(hogs);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let (addr, stop) = start().await;
        assert!(TcpStream::connect(addr).await.is_ok());
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
