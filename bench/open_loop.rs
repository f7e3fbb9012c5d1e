//! An open-loop HTTP/1.1 load generator for the benchmark's fixed-rate p99:
//! request i is due at `start + i / RATE`, whatever happened to the ones
//! before it, and its latency runs from that due time to the last byte of
//! its answer. A request that waits for a free connection, or for this
//! program, is charged the wait (no coordinated omission).
//!
//! Why not only oha: on two cores oha gets one, and at half the baseline's
//! throughput (about 48,000 req/s here) it uses most of it, so requests
//! queue inside oha and its corrected p99 measures oha (bench/NOTES.md).
//! This loop is one thread on one epoll set with no per-request allocation;
//! it spins instead of sleeping when the next request is under 2 ms away, so
//! a request goes out within microseconds of its due time. It reports how
//! late the sends were, so a saturated generator shows itself, and apart
//! from that its own lateness: from a request's due time to the first pass
//! of the loop that saw it due, before any wait for a free connection. That
//! part is the generator's (or its core's) alone, whatever the server does.
//!
//! Usage: bench_open_loop ADDR PATH RATE SECONDS CONNECTIONS
//! Prints one JSON object. Connections are opened with connect(2), so the
//! benchmark's LD_PRELOAD source-address shim spreads them over addresses.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

/// Spinning (a zero poll timeout) below this wait keeps send times exact;
/// epoll's timeout has millisecond granularity.
const SPIN_BELOW: Duration = Duration::from_millis(2);
/// How long requests still in flight at the end may take to finish.
const DRAIN: Duration = Duration::from_secs(1);

struct Connection {
    stream: MioStream,
    buffer: Vec<u8>,
    /// Due time of the request in flight, if any.
    due: Option<Instant>,
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    send_lag_ns: Vec<u64>,
    /// Due time to the first loop pass that saw the request due.
    own_lag_ns: Vec<u64>,
    non2xx: u64,
    errors: u64,
}

/// The status of one whole response at the front of `buffer` and its
/// length, or None while it is incomplete. Responses must carry
/// Content-Length (the servers measured here always do).
fn complete_response(buffer: &[u8]) -> Result<Option<(u16, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response: {e}")),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("response without Content-Length")?;
    let status = response.code.unwrap_or(0);
    Ok((buffer.len() >= head + length).then_some((status, head + length)))
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e9)
}

/// What to load: `rate` requests per second for `seconds` over
/// `connections` keep-alive connections to `addr`.
struct Settings {
    addr: SocketAddr,
    path: String,
    rate: f64,
    seconds: f64,
    connections: usize,
}

/// Runs the load: the tally (latencies and send lags sorted), how many
/// requests were sent, and how long it all took.
fn run(settings: &Settings) -> std::io::Result<(Tally, u64, Duration)> {
    let Settings {
        addr,
        ref path,
        rate,
        seconds,
        connections: count,
    } = *settings;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut poll = Poll::new()?;
    let mut connections = Vec::with_capacity(count);
    for i in 0..count {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = MioStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        connections.push(Connection {
            stream,
            buffer: Vec::with_capacity(4096),
            due: None,
        });
    }

    let total = (rate * seconds).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tally = Tally {
        latencies_ns: Vec::with_capacity(total as usize),
        send_lag_ns: Vec::with_capacity(total as usize),
        own_lag_ns: Vec::with_capacity(total as usize),
        ..Tally::default()
    };
    // Round-robin over idle connections, so every source address is used.
    let mut idle: VecDeque<usize> = (0..count).collect();
    let mut events = Events::with_capacity(count);
    let mut scratch = [0u8; 16384];
    let start = Instant::now();
    let due_of = |i: u64| start + interval.mul_f64(i as f64);
    let mut next = 0u64;
    let mut seen = 0u64;
    let mut in_flight = 0usize;
    let deadline = start + Duration::from_secs_f64(seconds) + DRAIN;

    loop {
        let now = Instant::now();
        while seen < total {
            let due = due_of(seen);
            if due > now {
                break;
            }
            tally
                .own_lag_ns
                .push(now.duration_since(due).as_nanos() as u64);
            seen += 1;
        }
        while next < total {
            let due = due_of(next);
            if due > now {
                break;
            }
            let Some(c) = idle.pop_front() else { break };
            let connection = &mut connections[c];
            next += 1;
            match connection.stream.write(&request) {
                Ok(n) if n == request.len() => {
                    tally
                        .send_lag_ns
                        .push(Instant::now().duration_since(due).as_nanos() as u64);
                    connection.due = Some(due);
                    in_flight += 1;
                }
                // A request head this small fits any socket buffer; a short
                // write or an error means the connection is gone.
                _ => tally.errors += 1,
            }
        }
        if next >= total && in_flight == 0 {
            break;
        }
        if now >= deadline {
            tally.errors += in_flight as u64;
            break;
        }
        let timeout = if next < total && !idle.is_empty() {
            due_of(next).saturating_duration_since(now)
        } else {
            deadline.saturating_duration_since(now).min(SPIN_BELOW)
        };
        let timeout = if timeout < SPIN_BELOW {
            Duration::ZERO
        } else {
            timeout - SPIN_BELOW / 2
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for event in events.iter() {
            let c = event.token().0;
            let connection = &mut connections[c];
            loop {
                match connection.stream.read(&mut scratch) {
                    Ok(0) => {
                        tally.errors += 1;
                        break;
                    }
                    Ok(n) => connection.buffer.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        tally.errors += 1;
                        break;
                    }
                }
            }
            match complete_response(&connection.buffer) {
                Ok(Some((status, length))) => {
                    let done = Instant::now();
                    if let Some(due) = connection.due.take() {
                        tally
                            .latencies_ns
                            .push(done.duration_since(due).as_nanos() as u64);
                        in_flight -= 1;
                        if !(200..300).contains(&status) {
                            tally.non2xx += 1;
                        }
                        idle.push_back(c);
                    }
                    connection.buffer.drain(..length);
                }
                Ok(None) => {}
                Err(problem) => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("connection {c}: {problem}"),
                    ))
                }
            }
        }
    }
    tally.latencies_ns.sort_unstable();
    tally.send_lag_ns.sort_unstable();
    tally.own_lag_ns.sort_unstable();
    Ok((tally, next, start.elapsed()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        eprintln!("usage: bench_open_loop ADDR PATH RATE SECONDS CONNECTIONS");
        std::process::exit(2);
    }
    let settings = Settings {
        addr: args[0].parse().expect("ADDR must be host:port"),
        path: args[1].clone(),
        rate: args[2].parse().expect("RATE must be a number"),
        seconds: args[3].parse().expect("SECONDS must be a number"),
        connections: args[4].parse().expect("CONNECTIONS must be a number"),
    };
    assert!(
        settings.rate > 0.0 && settings.seconds > 0.0 && settings.connections > 0,
        "RATE, SECONDS and CONNECTIONS must be positive"
    );
    let (tally, sent, elapsed) = match run(&settings) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("bench_open_loop: {}: {e}", settings.addr);
            std::process::exit(1);
        }
    };
    let ms = |v: Option<f64>| v.map_or("null".to_string(), |s| format!("{:.6}", s * 1e3));
    println!(
        "{{\"rate\": {rate}, \"sent\": {sent}, \"answered\": {answered}, \"requests_per_sec\": {rps:.1}, \
         \"p50_ms\": {p50}, \"p90_ms\": {p90}, \"p99_ms\": {p99}, \"p999_ms\": {p999}, \"max_ms\": {max}, \
         \"send_lag_p99_ms\": {lag99}, \"send_lag_max_ms\": {lagmax}, \"own_lag_p99_ms\": {own99}, \
         \"own_lag_max_ms\": {ownmax}, \"non2xx\": {non2xx}, \"errors\": {errors}}}",
        rate = settings.rate,
        answered = tally.latencies_ns.len(),
        rps = tally.latencies_ns.len() as f64 / elapsed.as_secs_f64(),
        p50 = ms(percentile(&tally.latencies_ns, 50.0)),
        p90 = ms(percentile(&tally.latencies_ns, 90.0)),
        p99 = ms(percentile(&tally.latencies_ns, 99.0)),
        p999 = ms(percentile(&tally.latencies_ns, 99.9)),
        max = ms(percentile(&tally.latencies_ns, 100.0)),
        lag99 = ms(percentile(&tally.send_lag_ns, 99.0)),
        lagmax = ms(percentile(&tally.send_lag_ns, 100.0)),
        own99 = ms(percentile(&tally.own_lag_ns, 99.0)),
        ownmax = ms(percentile(&tally.own_lag_ns, 100.0)),
        non2xx = tally.non2xx,
        errors = tally.errors,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// A one-connection-at-a-time HTTP/1.1 server on loopback that answers
    /// every request at once, except that it sleeps `stall` before request
    /// number `stall_at` (counted over all connections).
    fn server(stall_at: usize, stall: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let served = served.clone();
                thread::spawn(move || {
                    let mut buffer = [0u8; 1024];
                    let mut pending = Vec::new();
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            return;
                        }
                        pending.extend_from_slice(&buffer[..n]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let number = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if number == stall_at {
                                thread::sleep(stall);
                            }
                            if stream.write_all(ANSWER).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn settings(addr: SocketAddr, connections: usize) -> Settings {
        Settings {
            addr,
            path: "/".into(),
            rate: 2000.0,
            seconds: 1.0,
            connections,
        }
    }

    #[test]
    fn every_request_is_answered_and_timed() {
        let (tally, sent, _) = run(&settings(server(usize::MAX, Duration::ZERO), 4)).unwrap();
        assert_eq!(sent, 2000);
        assert_eq!(tally.latencies_ns.len(), 2000);
        assert_eq!((tally.errors, tally.non2xx), (0, 0));
    }

    /// The point of the tool: one connection stalled for 200 ms holds back
    /// every request due in those 200 ms (400 of 2000 at 2000 req/s), and
    /// each is charged its wait from its due time. A generator that timed
    /// from the send would see one slow request and a p90 of microseconds.
    #[test]
    fn a_stall_is_charged_to_every_request_due_during_it() {
        let stall = Duration::from_millis(200);
        let (tally, _, _) = run(&settings(server(100, stall), 1)).unwrap();
        assert_eq!(tally.latencies_ns.len(), 2000);
        let p90 = percentile(&tally.latencies_ns, 90.0).unwrap();
        let max = percentile(&tally.latencies_ns, 100.0).unwrap();
        assert!(
            p90 > 0.05,
            "p90 {p90} s: the requests behind the stall were not charged"
        );
        assert!(
            max >= stall.as_secs_f64(),
            "max {max} s is shorter than the stall"
        );
        let lag = percentile(&tally.send_lag_ns, 90.0).unwrap();
        assert!(
            lag > 0.05,
            "send lag p90 {lag} s: the queue behind the stall is not shown"
        );
        // The wait for the stalled connection is the server's, not the
        // generator's: the loop kept seeing each request as it fell due.
        let own = percentile(&tally.own_lag_ns, 90.0).unwrap();
        assert!(
            own < 0.02,
            "own lag p90 {own} s: the server's stall was charged to the generator"
        );
        assert_eq!(tally.own_lag_ns.len(), 2000);
    }

    #[test]
    fn responses_are_split_at_their_content_length() {
        assert_eq!(
            complete_response(b"HTTP/1.1 200 OK\r\ncontent-len"),
            Ok(None)
        );
        assert_eq!(
            complete_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no"),
            Ok(None)
        );
        let two = [
            ANSWER,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ]
        .concat();
        assert_eq!(complete_response(&two), Ok(Some((200, ANSWER.len()))));
        assert_eq!(
            complete_response(&two[ANSWER.len()..]),
            Ok(Some((404, two.len() - ANSWER.len())))
        );
        assert!(complete_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(complete_response(b"NOT HTTP\r\n\r\n").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(0.050));
        assert_eq!(percentile(&sorted, 99.0), Some(0.099));
        assert_eq!(percentile(&sorted, 100.0), Some(0.100));
        assert_eq!(percentile(&[], 99.0), None);
    }
}
