//! The container-facing HTTP listener: accept loop, limits, request IDs and
//! the request/response log lines, graceful shutdown. No IMDS logic here.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::imds::remembered::Remembered;
use crate::imds::Imds;
use crate::logging::{RequestLine, ResponseLine};
use crate::metrics::metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Parsed once rather than on every response.
const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// The server's own limits; hyper's defaults are far too generous for a
/// service every container on the host can reach.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// So that one container's slow or idle connections cannot fill the cap.
    pub max_connections_per_ip: usize,
    /// A request head must arrive within this; also bounds idle keep-alive.
    pub header_read_timeout: Duration,
    /// hyper's read buffer, which bounds the request head (answered 431 past it).
    pub max_head_bytes: usize,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(5),
            // hyper's minimum; IMDS requests are a few hundred bytes.
            max_head_bytes: 16 * 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then drains connections for
/// at most `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    imds: Arc<Imds>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::new(limits.max_connections_per_ip));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, never exit.
                    log::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let caller = peer.ip().to_canonical();
        let Some(ip_slot) = per_ip.acquire(caller) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Arc::new(Peer {
            imds: imds.clone(),
            ip: caller,
            ip_text: caller.to_string().into(),
            remembered: Remembered::default(),
        });
        let service = service_fn(move |request| handle(peer.clone(), request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                log::debug!("connection from {caller} closed: {error}");
            }
            drop(permit);
            drop(ip_slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => log::info!("all connections closed"),
        _ = tokio::time::sleep(limits.drain) => {
            log::warn!("gave up waiting for connections after {:?}", limits.drain)
        }
    }
}

/// Open connections per caller address.
struct PerIp {
    max: usize,
    /// Open connections, and whether a refusal has been logged since the
    /// caller was last under its cap (so a flood logs once, not per attempt).
    open: Mutex<HashMap<IpAddr, (usize, bool)>>,
}

struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().unwrap();
        let (count, logged) = open.entry(ip).or_insert((0, false));
        if *count >= self.max {
            if !*logged {
                *logged = true;
                log::warn!(
                    "refusing connections from {ip}: it already has {} open (the per-caller cap)",
                    self.max
                );
            }
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap();
        if let Some((count, logged)) = open.get_mut(&self.ip) {
            *count -= 1;
            *logged = false;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One connection's caller; its address is formatted once, for every
/// request line of the connection.
struct Peer {
    imds: Arc<Imds>,
    ip: IpAddr,
    ip_text: Box<str>,
    /// The connection's last credentials answer (hyper hands a connection's
    /// requests over one at a time, so its lock is never contended).
    remembered: Remembered,
}

async fn handle(
    peer: Arc<Peer>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let mut id_text = uuid::Uuid::encode_buffer();
    let id = &*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_text);
    let (parts, _body) = request.into_parts();
    // Fields as text already, so the log line is copied rather than formatted.
    let method = parts.method.as_str();
    let path = match origin_form(&parts.uri) {
        Some(path) => Cow::Borrowed(path),
        None => Cow::Owned(parts.uri.to_string()),
    };
    RequestLine {
        id,
        remote: &peer.ip_text,
        method,
        path: &path,
    }
    .log();
    let now = SystemTime::now();
    if let Some(mut hit) = peer.imds.remembered(&peer.remembered, peer.ip, &parts, now) {
        let mut response = hit.take_response();
        Answered {
            container: hit.container_name(),
            alias: hit.alias(),
            route: "credentials",
            reason: None,
        }
        .finish(&mut response, id, started);
        return Ok(response);
    }
    let mut reply = peer.imds.respond(peer.ip, &parts, now).await;
    peer.remembered.keep(&mut reply);
    let mut response = reply.response;
    Answered {
        container: reply.container.as_ref().map_or("-", |c| c.name.as_str()),
        alias: reply.role.as_ref().map_or("-", |r| r.alias.as_str()),
        route: reply.route,
        reason: reply.reason.as_deref(),
    }
    .finish(&mut response, id, started);
    Ok(response)
}

/// What the response line and the metrics say of an answer.
struct Answered<'a> {
    container: &'a str,
    alias: &'a str,
    route: &'static str,
    reason: Option<&'a str>,
}

impl Answered<'_> {
    /// Tags `response` with the request ID, logs the response line and
    /// counts the request.
    fn finish(self, response: &mut Response<Full<Bytes>>, id: &str, started: Instant) {
        response.headers_mut().insert(
            REQUEST_ID_NAME,
            HeaderValue::from_str(id).expect("a UUID is a header value"),
        );
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        ResponseLine {
            id,
            status,
            container: self.container,
            alias: self.alias,
            elapsed,
            reason: self.reason,
        }
        .log();
        metrics().count_request(self.route, status, self.alias, elapsed.as_secs_f64());
    }
}

/// The request target as sent, when it is a path (and query): what `Uri`'s
/// `Display` writes for it, without formatting.
fn origin_form(uri: &http::Uri) -> Option<&str> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return None;
    }
    uri.path_and_query().map(|p| p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_is_what_the_uri_displays() {
        for target in ["/latest/meta-data/", "/a/b?c=d&e", "/", "*"] {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(
                origin_form(&uri),
                Some(uri.to_string().as_str()),
                "{target}"
            );
        }
        for target in ["http://169.254.169.254/latest/", "169.254.169.254:80"] {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(origin_form(&uri), None, "{target}");
        }
    }
}
