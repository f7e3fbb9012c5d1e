//! The benchmark's baseline: a bare hyper 1 server answering every request
//! with one fixed JSON document, in the proxy's runtime shape (multi-thread
//! tokio, HTTP/1.1 with keep-alive, the same header-read timer and nodelay).
//! It is what a cached credentials answer would cost with nothing else to do.
//!
//! Usage: cargo run --release --example bench_baseline -- [ADDR] [BYTES]
//! ADDR defaults to 127.0.0.1:0, BYTES (the body size) to 1100. Prints
//! `listening on ADDR` once bound, then serves until killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// A credentials-shaped JSON document padded to exactly `size` bytes.
fn document(size: usize) -> Bytes {
    let head = r#"{"Code":"Success","LastUpdated":"2026-11-22T20:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIOSFODNN7EXAMPLE","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","Expiration":"2026-11-22T21:00:00Z","Token":""#;
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(size);
    body.push_str(head);
    body.extend(std::iter::repeat_n('A', pad));
    body.push_str(tail);
    Bytes::from(body)
}

async fn answer(
    body: Bytes,
    _request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(body))
        .expect("static response"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("ADDR must be host:port");
    let size: usize = args
        .next()
        .map(|s| s.parse().expect("BYTES must be a number"))
        .unwrap_or(1100);
    let body = document(size);

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(async move {
            let listener = TcpListener::bind(addr).await.expect("bind");
            println!(
                "listening on {} ({} byte body)",
                listener.local_addr().expect("bound address"),
                body.len()
            );
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(true);
            loop {
                let Ok((stream, _peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                let connection = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| answer(body.clone(), request)),
                );
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
}
