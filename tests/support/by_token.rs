//! The container credentials door (by token) on a [`Host`]'s core: its
//! grants' token files in a directory of their own, asked in process or
//! on a loopback listener.

use std::sync::Arc;

use tokio::net::TcpListener;

use ec2metaproxy::ccreds::grants::{Grant, Grants};
use ec2metaproxy::ccreds::{ContainerCredentials, Reply};
use ec2metaproxy::server::{serve, Limits};

use super::exchange::{head, parse, Answer};
use super::host::{Host, Listening};
use super::now;

pub struct ByToken {
    pub door: Arc<ContainerCredentials>,
    pub grants: Arc<Grants>,
    pub dir: tempfile::TempDir,
}

impl ByToken {
    /// The door on `host`'s broker with `grants` (name, alias).
    pub fn on(host: &Host, grants: &[(&str, &str)]) -> ByToken {
        let dir = tempfile::tempdir().unwrap();
        let grants = Grants::open(
            dir.path(),
            grants
                .iter()
                .map(|(name, alias)| Grant {
                    name: name.to_string(),
                    alias: alias.to_string(),
                })
                .collect(),
        )
        .unwrap();
        let grants = Arc::new(grants);
        ByToken {
            door: Arc::new(ContainerCredentials::new(
                host.broker.clone(),
                grants.clone(),
            )),
            grants,
            dir,
        }
    }

    /// The grant's token, as a workload reads its file.
    pub fn token(&self, grant: &str) -> String {
        std::fs::read_to_string(self.grants.path(grant)).unwrap()
    }

    /// The door's reply to a request head, at the test clock.
    pub async fn reply(&self, text: &str) -> Reply {
        let parts = parse(&head(text)).unwrap_or_else(|| panic!("not a request head: {text}"));
        self.door.respond(&parts, now()).await
    }

    /// The same, read whole.
    pub async fn send(&self, text: &str) -> Answer {
        Answer::of(self.reply(text).await.response).await
    }

    /// The door served on a loopback port as `main` serves it.
    pub async fn listen(&self) -> Listening {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            self.door.clone(),
            Limits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Listening { addr, stop, server }
    }
}
