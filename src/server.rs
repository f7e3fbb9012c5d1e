//! The HTTP listener every front door is served through: accept loop,
//! limits, request IDs and the request/response log lines, graceful
//! shutdown. It knows no protocol: a [`Service`] answers each request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::logging::{RequestLine, ResponseLine};
use crate::metrics::metrics;

/// What a listener serves: a front door. It is shared by every
/// connection; a connection's own state is made when it is accepted.
pub trait Service: Send + Sync + 'static {
    /// Per-connection state (the IMDS door keeps its remembered answer here).
    type Connection: Send + Sync + 'static;

    fn connect(&self, peer: &Peer) -> Self::Connection;

    /// Answers one request. A door calls [`Request::finish`] on the way
    /// out, with the names its response line should carry.
    fn call(
        &self,
        connection: &Self::Connection,
        request: Request<'_>,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// The other end of a connection, and the socket it reached.
pub struct Peer {
    /// The caller's address, an IPv4-mapped IPv6 address as IPv4.
    pub ip: IpAddr,
    /// The caller's end of the connection, as the accepted socket names it.
    pub addr: SocketAddr,
    /// `ip` formatted once, for every request line of the connection.
    ip_text: Box<str>,
    /// The local address of the accepted socket (`0.0.0.0:0` in the
    /// unlikely case the kernel cannot say).
    pub local: SocketAddr,
    /// Where the caller sent its SYN, when a DNAT rule changed it on the
    /// way (conntrack's original destination).
    pub original_dst: Option<SocketAddr>,
}

impl Peer {
    /// The caller at `addr` of a socket that the kernel says reached
    /// `local`, after NAT, and `original_dst`, before.
    pub fn new(addr: SocketAddr, local: SocketAddr, original_dst: Option<SocketAddr>) -> Peer {
        let ip = addr.ip().to_canonical();
        Peer {
            ip,
            addr,
            ip_text: ip.to_string().into(),
            local,
            original_dst: original_dst.filter(|dst| *dst != local),
        }
    }
}

/// Conntrack's record of where `stream`'s SYN was sent before a DNAT rule
/// rewrote it; `None` without conntrack (no NAT was done then).
fn original_destination(stream: &tokio::net::TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    use rustix::net::sockopt;
    match local {
        SocketAddr::V4(_) => sockopt::ip_original_dst(stream).ok().map(SocketAddr::V4),
        SocketAddr::V6(_) => sockopt::ipv6_original_dst(stream).ok().map(SocketAddr::V6),
    }
}

/// One request, as the server hands it to a [`Service`].
pub struct Request<'a> {
    /// The head; the body is never read.
    pub parts: http::request::Parts,
    pub peer: &'a Peer,
    /// The request ID; empty when the listener does not log requests.
    id: &'a str,
    started: Instant,
}

/// What the response line and the metrics say of an answer. The names are
/// borrowed, so a door can log names it only holds for the moment.
pub struct Answered<'a> {
    pub container: &'a str,
    pub alias: &'a str,
    /// The kind of route, for metrics: a fixed, low-cardinality name.
    pub route: &'static str,
    /// Why the answer is not a plain 200; never holds a secret.
    pub reason: Option<&'a str>,
}

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
    /// hyper's read buffer, which bounds the request head (answered 431
    /// past it); hyper's default (about 400 KiB) when `None`.
    pub max_head_bytes: Option<usize>,
    /// How long shutdown waits for requests in flight. Zero: `serve`
    /// returns at once (its connections are told to close after their
    /// request in flight).
    pub drain: Duration,
    /// Give each request an ID (the `X-Request-Id` header), log its request
    /// and response lines, and count it in the request metrics.
    pub log_requests: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            max_connections_per_ip: 64,
            header_read_timeout: Duration::from_secs(5),
            // IMDS requests are a few hundred bytes; hyper's own floor is 8 KiB.
            max_head_bytes: Some(16 * 1024),
            drain: Duration::from_secs(10),
            log_requests: true,
        }
    }
}

/// A listener on `addr`, as `TcpListener::bind` makes it, except that an
/// IPv6 address may still be tentative: a bridge's address stays so until
/// duplicate address detection ends, which on a bridge with no running
/// container is never, so the proxy would fail to start at boot.
/// `IPV6_FREEBIND` lets the bind succeed; connections arrive once the
/// address is usable.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            rustix::net::sockopt::set_ipv6_freebind(&socket, true)?;
            socket
        }
    };
    // As std's bind does on Unix: a restart can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `service` on `listener` until `shutdown` completes, then drains
/// connections for at most `limits.drain`.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_all(vec![listener], service, limits, shutdown).await;
}

/// [`serve`] on several listeners (an IPv4 and an IPv6 address, say) that
/// share one set of limits: a caller's connections count once, whichever
/// address it reached.
pub async fn serve_all<S: Service>(
    listeners: Vec<TcpListener>,
    service: Arc<S>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let per_ip = Arc::new(PerIp::new(limits.max_connections_per_ip));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    if let Some(max) = limits.max_head_bytes {
        builder.max_buf_size(max);
    }
    let locals: Vec<String> = listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string())
        })
        .collect();
    // Where the next accept starts looking, so a busy listener cannot
    // starve the others.
    let mut first = 0;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            (which, accepted) = accept_any(&listeners, &mut first) => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, never exit.
                    log::warn!("accept failed on {}: {error}", locals[which]);
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
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let peer = Peer::new(peer, local, original_destination(&stream, local));
        let connection = Arc::new(Connection {
            state: service.connect(&peer),
            service: service.clone(),
            peer,
            log_requests: limits.log_requests,
        });
        let handler = service_fn(move |request| handle(connection.clone(), request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), handler));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                log::debug!("connection from {caller} closed: {error}");
            }
            drop(permit);
            drop(ip_slot);
        });
    }
    drop(listeners);
    if limits.drain.is_zero() {
        return;
    }
    tokio::select! {
        _ = graceful.shutdown() => log::info!("all connections closed"),
        _ = tokio::time::sleep(limits.drain) => {
            log::warn!("gave up waiting for connections after {:?}", limits.drain)
        }
    }
}

/// The next connection on any of `listeners`, and which one it came in on;
/// the search starts at `first`, which moves past the listener that answered.
async fn accept_any(
    listeners: &[TcpListener],
    first: &mut usize,
) -> (usize, std::io::Result<(tokio::net::TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for offset in 0..listeners.len() {
            let which = (*first + offset) % listeners.len();
            if let std::task::Poll::Ready(accepted) = listeners[which].poll_accept(cx) {
                *first = (which + 1) % listeners.len();
                return std::task::Poll::Ready((which, accepted));
            }
        }
        std::task::Poll::Pending
    })
    .await
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
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((count, logged)) = open.get_mut(&self.ip) {
            *count -= 1;
            *logged = false;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One accepted connection: the service, the caller, and the service's
/// state for this connection (hyper hands a connection's requests over one
/// at a time).
struct Connection<S: Service> {
    service: Arc<S>,
    peer: Peer,
    state: S::Connection,
    log_requests: bool,
}

async fn handle<S: Service>(
    connection: Arc<Connection<S>>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let mut id_text = uuid::Uuid::encode_buffer();
    let (parts, _body) = request.into_parts();
    let peer = &connection.peer;
    let id = if connection.log_requests {
        let id = &*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_text);
        // Fields as text already, so the log line is copied rather than formatted.
        let path = match origin_form(&parts.uri) {
            Some(path) => Cow::Borrowed(path),
            None => Cow::Owned(parts.uri.to_string()),
        };
        RequestLine {
            id,
            remote: &peer.ip_text,
            method: parts.method.as_str(),
            path: &path,
        }
        .log();
        id
    } else {
        ""
    };
    let request = Request {
        parts,
        peer,
        id,
        started,
    };
    Ok(connection.service.call(&connection.state, request).await)
}

impl Request<'_> {
    /// Tags `response` with the request ID, logs the response line and
    /// counts the request; nothing when the listener does not log requests.
    pub fn finish(self, response: &mut Response<Full<Bytes>>, answered: Answered<'_>) {
        if self.id.is_empty() {
            return;
        }
        if let Ok(id) = HeaderValue::from_str(self.id) {
            response.headers_mut().insert(REQUEST_ID_NAME, id);
        }
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        ResponseLine {
            id: self.id,
            status,
            container: answered.container,
            alias: answered.alias,
            elapsed,
            reason: answered.reason,
        }
        .log();
        metrics().count_request(
            answered.route,
            status,
            answered.alias,
            elapsed.as_secs_f64(),
        );
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

    /// The stand-in for a bridge's still-tentative address: one not on
    /// this host at all (documentation prefix; nothing is sent to it).
    #[tokio::test]
    async fn an_ipv6_address_not_yet_usable_can_be_listened_on() {
        let addr: SocketAddr = "[2001:db8:ec2::1]:0".parse().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return; // the host has that address: nothing to show
        }
        let listener = bind(addr).expect("IPV6_FREEBIND bind");
        assert_eq!(listener.local_addr().unwrap().ip(), addr.ip());
        assert!(bind("127.0.0.1:0".parse().unwrap()).is_ok());
    }

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
