//! An address that changes hands. Docker frees a container's address only
//! after its process exits, but tells the proxy some milliseconds later (or
//! much later while its event stream is down). The proxy asks the kernel, so
//! the address's next owner is never served as the container that left,
//! and cannot use its tokens.
//!
//! In process, on tokio's paused clock: the index's wait for an address's
//! next owner (up to 600 ms) and its pause between lists take no real time.

use std::time::SystemTime;

use ec2metaproxy::container::Container;
use ec2metaproxy::imds::{TOKEN_HEADER, TTL_HEADER};

use crate::support::docker::container;
use crate::support::exchange::request;
use crate::support::host::Host;

const ADDRESS: &str = "10.77.0.2";

const CONFIG: &str = r#"{"aliasToARN": {"web": "arn:aws:iam::111111111111:role/Web",
                                       "batch": "arn:aws:iam::111111111111:role/Batch"},
                        "defaultAlias": "web", "metadataURL": null}"#;

/// A host where a `web` container (`old`) with a live process holds
/// ADDRESS, on a Docker that sends no events.
async fn host() -> Host {
    Host::builder(CONFIG)
        .running(container(
            "old",
            ADDRESS,
            &[("ec2metaproxy.RoleAlias", "web")],
        ))
        .docker()
        .start()
        .await
}

/// The old owner stops; Docker gives its address to `next_owner` (or to
/// nobody yet) and says nothing.
fn old_owner_exits(host: &mut Host, next_owner: Option<Container>) {
    host.exit("old");
    if let Some(next) = next_owner {
        host.docker().hand_over(next);
    }
}

async fn ask(host: &Host, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let answer = host
        .respond(ADDRESS, &request(method, path, headers), SystemTime::now())
        .await;
    (answer.status, answer.body)
}

async fn role(host: &Host, token: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = token.map(|t| (TOKEN_HEADER, t)).into_iter().collect();
    ask(
        host,
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &headers,
    )
    .await
}

fn batch() -> Container {
    container("new", ADDRESS, &[("ec2metaproxy.RoleAlias", "batch")])
}

#[tokio::test(start_paused = true)]
async fn the_next_owner_of_an_address_gets_its_own_role_before_docker_says_so() {
    let mut host = host().await;
    assert_eq!(role(&host, None).await, (200, "Web".into()));
    old_owner_exits(&mut host, Some(batch()));
    assert_eq!(role(&host, None).await, (200, "Batch".into()));
}

#[tokio::test(start_paused = true)]
async fn an_exited_container_is_not_served_while_docker_still_lists_it() {
    let mut host = host().await;
    assert_eq!(role(&host, None).await, (200, "Web".into()));
    old_owner_exits(&mut host, None);
    let (status, _) = role(&host, None).await;
    assert_eq!(status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refused_from_the_next_owner_of_its_address() {
    let mut host = host().await;
    let (status, token) = ask(&host, "PUT", "/latest/api/token", &[(TTL_HEADER, "600")]).await;
    assert_eq!(status, 200);
    assert_eq!(role(&host, Some(&token)).await, (200, "Web".into()));
    old_owner_exits(&mut host, Some(batch()));
    assert_eq!(role(&host, Some(&token)).await.0, 401);
    let (_, fresh) = ask(&host, "PUT", "/latest/api/token", &[(TTL_HEADER, "600")]).await;
    assert_eq!(role(&host, Some(&fresh)).await, (200, "Batch".into()));
}
