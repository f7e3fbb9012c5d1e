//! One way to ask and one shape of answer, in process or over a socket:
//! a request goes in as a request head or as the raw bytes a client writes;
//! the answer comes out whole (status, headers, body) so tests compare it
//! whole and a failure prints all of it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response, compared whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Names lowercased, in the order the response holds them.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// Reads a response the proxy built (in process).
    pub async fn of(response: http::Response<Full<Bytes>>) -> Answer {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The same answer with its headers sorted by name, to compare with a
    /// list written in a test.
    pub fn sorted(mut self) -> Answer {
        self.headers.sort();
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request head as the server hands it to a door.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

/// A request head written as in a spec, one header a line (`\n`), as the
/// bytes a client sends (`\r\n`, and the blank line that ends the head).
pub fn head(text: &str) -> Vec<u8> {
    (text.replace('\n', "\r\n") + "\r\n").into_bytes()
}

/// Parses `raw` as hyper does (httparse, then `http::Uri`); `None` when it
/// does not parse (hyper would answer 400 itself).
pub fn parse(raw: &[u8]) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let method = http::Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri: http::Uri = parsed.path?.parse().ok()?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// What came back over a socket.
#[derive(Debug)]
pub struct Exchanged {
    /// Every byte read, as text: all the responses of a pipelined exchange.
    pub raw: String,
    /// The first response; status 0 when it is not a whole response.
    pub answer: Answer,
}

/// How long an exchange waits for the server to close (tokio time).
const EXCHANGE_LIMIT: Duration = Duration::from_secs(5);

/// Sends `raw` and reads until the server closes the connection (or
/// [`EXCHANGE_LIMIT`] passes).
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> Exchanged {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A server may close before reading everything (a 400 on the first line).
    let _ = stream.write_all(raw).await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + EXCHANGE_LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    Exchanged {
        raw: String::from_utf8_lossy(&seen).into_owned(),
        answer: first_response(&seen, raw.starts_with(b"HEAD ")),
    }
}

/// `GET path` over a socket, closing after the answer.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(addr, raw.as_bytes()).await.answer
}

/// The first response in `seen`: its body runs to its `content-length`
/// (none after a HEAD), else to the end. When `seen` holds no whole head,
/// the status is read from the status line if any (else 0) and the body is
/// all that was seen.
fn first_response(seen: &[u8], head_request: bool) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    if let Ok(httparse::Status::Complete(head_len)) = response.parse(seen) {
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
        let rest = &seen[head_len..];
        let body = match (head_request, length) {
            (true, _) => &rest[..0],
            (false, Some(length)) => &rest[..length.min(rest.len())],
            (false, None) => rest,
        };
        return Answer {
            status: response.code.unwrap_or(0),
            headers: response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
    }
    let text = String::from_utf8_lossy(seen).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: Vec::new(),
        body: text,
    }
}
