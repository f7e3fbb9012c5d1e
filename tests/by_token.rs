//! The container credentials door, by token: a grant's token (from its
//! file, sent verbatim in `Authorization`, as the SDKs' container
//! credentials provider sends it) gets that grant's role; anything else
//! gets a JSON error and no credentials, the default role included.

use crate::support::by_token::ByToken;
use crate::support::exchange::exchange;
use crate::support::host::{Host, LOOPBACK};
use crate::support::sts::{SECRET, SESSION_TOKEN};

fn get(token: &str) -> String {
    format!("GET /creds HTTP/1.1\nHost: 127.0.0.1\nAuthorization: {token}\n")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The ECS agent's document plus the EKS agent's `AccountId`, with an
/// `Expiration` ending in `Z` (aws-config refuses `+00:00`), and one
/// AssumeRole named after the grant.
#[tokio::test]
async fn a_grants_token_gets_its_aliases_role_shaped_like_the_ecs_agents_answer() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let answer = door.send(&get(&door.token("batch"))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        json(&answer.body),
        serde_json::json!({
            "AccessKeyId": "ASIAEXAMPLE",
            "SecretAccessKey": SECRET,
            "Token": SESSION_TOKEN,
            "Expiration": "2026-11-22T21:00:00Z",
            "RoleArn": "arn:aws:iam::222222222222:role/team/Web",
            "AccountId": "222222222222",
        })
    );
    let calls = host.sts.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(&*calls[0].session_name, "batch");
    assert_eq!(calls[0].role_arn.name(), "Web");
}

/// Missing or malformed: 401 (ask for a token); well formed but no
/// grant's: 403. Each a JSON body, none a credential, no AssumeRole at all:
/// a bad token never falls back to the default role. The log's reason
/// names the problem, never the token.
#[tokio::test]
async fn a_missing_malformed_or_unknown_token_gets_no_role_at_all() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let good = door.token("batch");
    let mut unknown = good.clone().into_bytes();
    unknown[0] = if unknown[0] == b'A' { b'B' } else { b'A' };
    let unknown = String::from_utf8(unknown).unwrap();
    let cases = [
        (
            "no token",
            "GET /creds HTTP/1.1\nHost: x\n".to_string(),
            401,
            "Unauthorized",
            "no Authorization header",
        ),
        (
            "more after the token",
            get(&format!("{good} x")),
            401,
            "Unauthorized",
            "Authorization is not a grant token",
        ),
        (
            "Bearer in front",
            get(&format!("Bearer {good}")),
            401,
            "Unauthorized",
            "Authorization is not a grant token",
        ),
        (
            "one character off",
            get(&unknown),
            403,
            "AccessDenied",
            "Authorization is no grant's current token",
        ),
    ];
    for (what, request, status, code, reason) in cases {
        let reply = door.reply(&request).await;
        assert!(reply.grant.is_none() && reply.alias.is_none(), "{what}");
        assert_eq!(reply.reason.as_deref(), Some(reason), "{what}");
        let answer = crate::support::exchange::Answer::of(reply.response).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        assert_eq!(
            json(&answer.body),
            serde_json::json!({"code": code, "message": reason}),
            "{what}"
        );
        assert!(!answer.body.contains(&good), "{what}");
    }
    assert_eq!(host.sts.count(), 0, "no AssumeRole for a refused token");
}

/// Each grant's token gets its own grant's role, not another's.
#[tokio::test]
async fn each_grants_token_gets_its_own_grants_role() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web"), ("cron", "default")]);
    assert_ne!(door.token("batch"), door.token("cron"));
    let cron = door.reply(&get(&door.token("cron"))).await;
    assert_eq!(cron.grant.as_ref().unwrap().name, "cron");
    assert_eq!(cron.alias.as_deref(), Some("default"));
    let body = crate::support::exchange::Answer::of(cron.response)
        .await
        .body;
    assert_eq!(
        json(&body)["RoleArn"],
        "arn:aws:iam::111111111111:role/Default"
    );
}

/// A rotated token (a new file, or the old one deleted) is refused once
/// the files are read again (every second in `main`), with no restart; the
/// new one works.
#[tokio::test]
async fn a_rotated_token_is_refused_and_the_new_one_served() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let old = door.token("batch");
    assert_eq!(door.send(&get(&old)).await.status, 200);
    ec2metaproxy::ccreds::grants::rotate(door.dir.path(), "batch").unwrap();
    door.grants.refresh().unwrap();
    assert_eq!(door.send(&get(&old)).await.status, 403);
    let new = door.token("batch");
    assert_eq!(door.send(&get(&new)).await.status, 200);
    std::fs::remove_file(door.grants.path("batch")).unwrap();
    door.grants.refresh().unwrap();
    assert_eq!(door.send(&get(&new)).await.status, 403);
    assert_eq!(door.send(&get(&door.token("batch"))).await.status, 200);
}

/// Only GET and HEAD, as the SDKs ask.
#[tokio::test]
async fn other_methods_are_405_before_the_token_is_looked_at() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let request = format!(
        "POST /creds HTTP/1.1\nHost: x\nAuthorization: {}\n",
        door.token("batch")
    );
    let answer = door.send(&request).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
}

/// The IMDS door does not read `Authorization`: a grant's token sent there
/// from the host is an unknown caller's request, 404, no credentials.
#[tokio::test]
async fn a_grant_token_sent_to_the_imds_door_gets_nothing() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let request = format!(
        "GET /latest/meta-data/iam/security-credentials/Web HTTP/1.1\nHost: x\nAuthorization: {}\n",
        door.token("batch")
    );
    let answer = host.send(LOOPBACK, &request).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(host.sts.count(), 0);
}

/// Served by the generic listener: a request ID, keep-alive, and a token
/// checked on every request of a connection.
#[tokio::test]
async fn the_door_is_served_by_the_generic_listener() {
    let host = Host::standard().start().await;
    let door = ByToken::on(&host, &[("batch", "web")]);
    let listening = door.listen().await;
    let raw = format!(
        "GET /creds HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\nGET /creds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        door.token("batch")
    );
    let exchanged = exchange(listening.addr, raw.as_bytes()).await;
    let text = &exchanged.raw;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("x-request-id: "), "{text}");
    assert!(text.contains("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
}
