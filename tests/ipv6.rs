//! Callers on IPv6: the proxy listens on several addresses at once (an IPv4
//! and an IPv6 one, for 169.254.169.254 and [fd00:ec2::254]), knows each
//! caller by the address it calls from, and binds its tokens to that
//! address. The corpus run over IPv6 is in `security`.

use std::net::SocketAddr;

use crate::support::docker::container;
use crate::support::exchange::{exchange, get, Answer};
use crate::support::host::{Host, LOOPBACK};

const CREDENTIALS: &str = "/latest/meta-data/iam/security-credentials/";

/// `web` on 127.0.0.1, and an unlabelled container (the default role) on ::1.
async fn host() -> Host {
    Host::standard()
        .loopback("four")
        .container(container("six", "::1", &[]))
        .start()
        .await
}

async fn token(addr: SocketAddr) -> String {
    let answer = exchange(
        addr,
        b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nConnection: close\r\n\r\n",
    )
    .await
    .answer;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

async fn get_with(addr: SocketAddr, token: &str) -> Answer {
    let raw = format!(
        "GET {CREDENTIALS} HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"
    );
    exchange(addr, raw.as_bytes()).await.answer
}

#[tokio::test]
async fn each_listen_address_serves_the_callers_that_reach_it() {
    let host = host().await;
    let proxy = host.listen_all(&["127.0.0.1:0", "[::1]:0"]).await;
    let (four, six) = (proxy.addrs[0], proxy.addrs[1]);
    for _ in 0..2 {
        let answer = get(four, CREDENTIALS).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "Web"));
        let answer = get(six, CREDENTIALS).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "Default"),
            "the IPv6 caller is its own container"
        );
    }
}

/// A token is the caller's, whichever listener issued it; one issued to an
/// IPv6 address is refused from another address.
#[tokio::test]
async fn a_token_issued_to_an_ipv6_address_is_refused_from_another() {
    let host = host().await;
    let proxy = host.listen_all(&["127.0.0.1:0", "[::1]:0"]).await;
    let (four, six) = (proxy.addrs[0], proxy.addrs[1]);
    let issued = token(six).await;
    assert_eq!(get_with(six, &issued).await.status, 200);
    assert_eq!(get_with(four, &issued).await.status, 401, "from 127.0.0.1");
    let theirs = token(four).await;
    assert_eq!(get_with(four, &theirs).await.status, 200);
    assert_eq!(
        get_with(six, &theirs).await.status,
        401,
        "127.0.0.1's token from ::1"
    );
}

/// An IPv6 socket bound to an IPv4-mapped address (as a dual-stack `[::]`
/// listener does) names IPv4 callers `::ffff:a.b.c.d`: they are still the
/// IPv4 containers, and their tokens still theirs.
#[tokio::test]
async fn an_ipv4_caller_of_an_ipv6_socket_is_its_ipv4_container() {
    let host = host().await;
    let proxy = host.listen_all(&["[::ffff:127.0.0.1]:0"]).await;
    let four: SocketAddr = (
        LOOPBACK.parse::<std::net::IpAddr>().unwrap(),
        proxy.addrs[0].port(),
    )
        .into();
    let answer = get(four, CREDENTIALS).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "Web"));
    let issued = token(four).await;
    assert_eq!(get_with(four, &issued).await.status, 200);
}
