//! The SDK-session load generator: what an SDK's credential fetch costs the
//! server, one session at a time per thread. A session is botocore's IMDSv2
//! sequence, each request on a new connection (as an SDK fetching credentials
//! once in a while has no connection to reuse): the token PUT, the role
//! listing with that token, then the role's credentials document.
//!
//! Usage: bench_sdk_session ADDR ROLE SECONDS THREADS
//! Prints one JSON object: sessions, non-200 answers, failed connections and
//! the session latency (first connect to the last byte of the credentials)
//! at p50, p99 and max, in microseconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One request on a new connection; the status, or None when the connection
/// or the answer failed. The body is read to its end (Content-Length).
fn exchange(addr: SocketAddr, request: &[u8], buffer: &mut Vec<u8>) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(buffer) {
            let length = content_length(&buffer[..end]).unwrap_or(0);
            if buffer.len() >= end + length {
                break;
            }
        }
    }
    let line = std::str::from_utf8(buffer.get(..12)?).ok()?;
    line.get(9..12)?.parse().ok()
}

fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The token from a PUT's answer: the body after the head.
fn body(buffer: &[u8]) -> &[u8] {
    head_end(buffer).map_or(&[], |end| &buffer[end..])
}

#[derive(Default)]
struct Tally {
    sessions: u64,
    non_200: u64,
    failed: u64,
    latencies_us: Vec<u64>,
}

fn run(addr: SocketAddr, role: &str, until: Instant) -> Tally {
    let host = addr.ip();
    let put = format!(
        "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut tally = Tally::default();
    let mut buffer = Vec::with_capacity(4096);
    while Instant::now() < until {
        let started = Instant::now();
        let Some(status) = exchange(addr, put.as_bytes(), &mut buffer) else {
            tally.failed += 1;
            continue;
        };
        if status != 200 {
            tally.non_200 += 1;
            continue;
        }
        let token = String::from_utf8_lossy(body(&buffer)).into_owned();
        let get = |path: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-aws-ec2-metadata-token: {token}\r\nConnection: close\r\n\r\n"
            )
        };
        let listing = get("/latest/meta-data/iam/security-credentials/");
        let credentials = get(&format!(
            "/latest/meta-data/iam/security-credentials/{role}"
        ));
        let mut ok = true;
        for request in [&listing, &credentials] {
            match exchange(addr, request.as_bytes(), &mut buffer) {
                Some(200) => {}
                Some(_) => {
                    tally.non_200 += 1;
                    ok = false;
                    break;
                }
                None => {
                    tally.failed += 1;
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            tally.sessions += 1;
            tally
                .latencies_us
                .push(started.elapsed().as_micros() as u64);
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, role, seconds, threads] = args.as_slice() else {
        eprintln!("usage: bench_sdk_session ADDR ROLE SECONDS THREADS");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR must be ip:port");
    let seconds: f64 = seconds.parse().expect("SECONDS must be a number");
    let threads: usize = threads.parse().expect("THREADS must be a number");
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| run(addr, role, until)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        all.sessions += t.sessions;
        all.non_200 += t.non_200;
        all.failed += t.failed;
        all.latencies_us.extend(t.latencies_us);
    }
    all.latencies_us.sort_unstable();
    println!(
        "{{\"sessions\":{},\"sessions_per_second\":{:.1},\"non_200\":{},\"failed\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        all.sessions,
        all.sessions as f64 / elapsed,
        all.non_200,
        all.failed,
        percentile(&all.latencies_us, 0.50),
        percentile(&all.latencies_us, 0.99),
        all.latencies_us.last().copied().unwrap_or(0),
    );
}
