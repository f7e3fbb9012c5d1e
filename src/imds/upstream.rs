//! The real metadata service, for routes on the passthrough list.
//!
//! The proxy holds its own IMDSv2 token for the upstream (never a caller's),
//! reads whole, bounded bodies, and forwards only the canonical path.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{TOKEN_HEADER, TTL_HEADER};

/// IMDS answers in milliseconds; an SDK gives the whole request about a second.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest upstream body relayed (user-data is at most 16 KiB).
const MAX_BODY: usize = 64 * 1024;
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// Renew the upstream token this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// After the upstream refused tokens (an IMDSv1-only service), ask again after this.
const TOKEN_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("metadata service {base} did not answer within {TIMEOUT:?}")]
    Timeout { base: String },
    #[error("metadata service {base}: {message}")]
    Failed { base: String, message: String },
}

enum TokenState {
    None,
    Valid { token: String, until: Instant },
    Unsupported { retry_at: Instant },
}

pub struct Upstream {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
    token: tokio::sync::Mutex<TokenState>,
}

impl Upstream {
    pub fn new(base: &Uri) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        connector.set_nodelay(true);
        Upstream {
            base: base.to_string().trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            token: tokio::sync::Mutex::new(TokenState::None),
        }
    }

    fn error(&self, message: impl ToString) -> UpstreamError {
        UpstreamError::Failed {
            base: self.base.clone(),
            message: message.to_string(),
        }
    }

    async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, UpstreamError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.error(e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| self.error(format!("reading the body: {e}")))?
                .to_bytes();
            Ok(Response::from_parts(parts, Full::new(body)))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout {
                base: self.base.clone(),
            })?
    }

    /// The proxy's own token, fetched when missing or about to expire.
    async fn token(&self, renew: bool) -> Result<Option<String>, UpstreamError> {
        let mut state = self.token.lock().await;
        let now = Instant::now();
        match &*state {
            TokenState::Valid { token, until } if !renew && *until > now => {
                return Ok(Some(token.clone()))
            }
            TokenState::Unsupported { retry_at } if !renew && *retry_at > now => return Ok(None),
            _ => {}
        }
        let request = Request::put(format!("{}/latest/api/token", self.base))
            .header(TTL_HEADER, TOKEN_TTL.as_secs())
            .body(Empty::new())
            .map_err(|e| self.error(e))?;
        let response = self.send(request).await?;
        if response.status() == StatusCode::OK {
            let body = response
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|never| match never {})
                .to_bytes();
            let token =
                String::from_utf8(body.to_vec()).map_err(|_| self.error("token is not text"))?;
            *state = TokenState::Valid {
                token: token.clone(),
                until: now + TOKEN_TTL - TOKEN_MARGIN,
            };
            Ok(Some(token))
        } else {
            log::debug!(
                "metadata service {} refused a token ({}); using IMDSv1",
                self.base,
                response.status()
            );
            *state = TokenState::Unsupported {
                retry_at: now + TOKEN_RETRY,
            };
            Ok(None)
        }
    }

    /// Fetches `path` (canonical, from the route classifier) with `method`
    /// (GET or HEAD). Only the status, content type and body are relayed.
    pub async fn fetch(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<Response<Full<Bytes>>, UpstreamError> {
        let mut renew = false;
        loop {
            let token = self.token(renew).await?;
            let mut request = Request::builder()
                .method(method.clone())
                .uri(format!("{}{path}", self.base));
            if let Some(token) = &token {
                request = request.header(TOKEN_HEADER, token);
            }
            let request = request.body(Empty::new()).map_err(|e| self.error(e))?;
            let response = self.send(request).await?;
            // Our token may have died with an upstream restart: renew once.
            if response.status() == StatusCode::UNAUTHORIZED && token.is_some() && !renew {
                renew = true;
                continue;
            }
            let (parts, body) = response.into_parts();
            let mut relayed = Response::new(body);
            *relayed.status_mut() = parts.status;
            if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
                relayed
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type.clone());
            }
            return Ok(relayed);
        }
    }
}
