//! The fake upstream metadata service: it answers every path with a canary
//! naming the path, and counts the paths it is asked. Tests expect the
//! identity routes to be asked zero times.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

/// What every answer but the token's starts with.
pub const CANARY: &str = "CANARY";
/// The proxy's own token request to the metadata service; not a caller's.
pub const TOKEN_PATH: &str = "/latest/api/token";

/// A metadata service that answers every path with a canary and counts paths.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// What `/latest/meta-data/` answers instead of the canary, when set.
    listing: Arc<Mutex<Option<String>>>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = hits.clone();
        let listing: Arc<Mutex<Option<String>>> = Arc::default();
        let listed = listing.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                let listing = listed.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: http::Request<_>| {
                        let path = request.uri().path().to_string();
                        *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let listing = listing.clone();
                        async move {
                            let body = if request.method() == http::Method::PUT {
                                "upstream-token".to_string()
                            } else if let Some(listing) = listing
                                .lock()
                                .unwrap()
                                .clone()
                                .filter(|_| path == "/latest/meta-data/")
                            {
                                listing
                            } else {
                                format!("{CANARY} {path}")
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeUpstream {
            addr,
            hits,
            listing,
        }
    }

    /// The URL a config names it by.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `/latest/meta-data/` answers `listing` from now on.
    pub fn list(&self, listing: &str) {
        *self.listing.lock().unwrap() = Some(listing.to_string());
    }

    /// How many times `path` was asked.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// How many requests were made, the proxy's own token requests left out.
    pub fn get_hits(&self) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p != TOKEN_PATH)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every path asked so far, with its count.
    pub fn snapshot(&self) -> HashMap<String, usize> {
        self.hits.lock().unwrap().clone()
    }

    /// Paths asked since `before` (a [`snapshot`](Self::snapshot)), the
    /// proxy's own token request left out.
    pub fn asked_since(&self, before: &HashMap<String, usize>) -> BTreeMap<String, usize> {
        self.snapshot()
            .into_iter()
            .filter(|(path, _)| path != TOKEN_PATH)
            .filter_map(|(path, n)| {
                let new = n - before.get(&path).copied().unwrap_or(0);
                (new > 0).then_some((path, new))
            })
            .collect()
    }
}
