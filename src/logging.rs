//! Log output: text for people (the default) or one JSON object per line for
//! log shippers (`"logFormat": "json"`). Structured fields are `log`
//! key-values, so the request and response lines carry `id`, `status`,
//! `container`, `alias` and `ms` as fields in both formats. Those two lines,
//! logged for every request, are written directly in text output (see
//! [`RequestLine`]) in the bytes the `log` path would write.
//!
//! Each line is rendered into a buffer the logging thread keeps, then
//! appended to one shared pending buffer. A writer thread takes the whole
//! pending buffer every 8 ms ([`GATHER`]) and writes it to stderr in
//! one call. While there is work, the writer is awake (sleeping on a timer
//! between batches), so loggers never wake it: only the first line after an
//! idle spell does. Two lines per request with a wake-up per line cost more
//! than the request itself.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use log::kv::{Key, Value, VisitSource};

/// How log lines are written (serialised as the config spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Installs the logger. `RUST_LOG` (env_logger's syntax) wins over
/// `default_filter`.
///
/// The pending buffer is bounded: when stderr stops draining, loggers wait
/// for the writer (requests slow down) rather than memory growing or lines
/// being dropped.
pub fn init(format: LogFormat, default_filter: &str) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_string());
    let filter = env_filter::Builder::new().parse(&spec).build();
    let max_level = filter.filter();
    let queue = Queue::spawn(Box::new(std::io::stderr()));
    let _ = QUEUE.set(queue);
    if format == LogFormat::Text {
        let request_lines = filter.enabled(
            &log::Metadata::builder()
                .level(log::Level::Info)
                .target(SERVER_TARGET)
                .build(),
        );
        let _ = DIRECT.set(Direct {
            queue,
            request_lines,
        });
    }
    log::set_boxed_logger(Box::new(Logger {
        format,
        filter,
        queue,
    }))
    .expect("the logger is installed once");
    log::set_max_level(max_level);
}

/// Waits (up to a second) until every line logged so far is written.
/// Call before the process exits.
pub fn flush() {
    if let Some(queue) = QUEUE.get() {
        queue.flush(Duration::from_secs(1));
    }
}

/// The process's queue, for [`flush`].
static QUEUE: OnceLock<&'static Queue> = OnceLock::new();

struct Logger {
    format: LogFormat,
    filter: env_filter::Filter,
    queue: &'static Queue,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let format = self.format;
        push_line(self.queue, |timestamp, line| {
            render_into(format, timestamp, record, line)
        });
    }

    fn flush(&self) {
        self.queue.flush(Duration::from_secs(1));
    }
}

const LINE_CAPACITY: usize = 512;
/// A thread's line buffer is given back past this (after one huge line).
const MAX_KEPT_LINE: usize = 64 * 1024;

/// What each logging thread keeps between lines.
struct Local {
    line: Vec<u8>,
    clock: Clock,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            line: Vec::with_capacity(LINE_CAPACITY),
            clock: Clock::default(),
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Renders one line with `render(timestamp, line)` into this thread's
/// buffer and queues it.
fn push_line(queue: &Queue, render: impl Fn(&str, &mut Vec<u8>)) {
    let render_and_push = |local: &mut Local| {
        local.line.clear();
        let now = SystemTime::now();
        let Local { line, clock } = local;
        render(clock.timestamp(now), line);
        line.push(b'\n');
        queue.push(line);
        if line.capacity() > MAX_KEPT_LINE {
            *line = Vec::with_capacity(LINE_CAPACITY);
        }
    };
    // A value whose Display logs would find the buffer borrowed: give it
    // a buffer of its own rather than panic.
    let done = LOCAL.with(|local| match local.try_borrow_mut() {
        Ok(mut local) => {
            render_and_push(&mut local);
            true
        }
        Err(_) => false,
    });
    if !done {
        render_and_push(&mut Local::default());
    }
}

/// Formats timestamps like [`crate::time::timestamp_millis`],
/// which it calls once per second; within a second only the milliseconds
/// change.
#[derive(Default)]
struct Clock {
    /// The whole second `prefix` is for.
    second: Option<u64>,
    /// `2026-11-25T00:00:00.` of that second.
    prefix: String,
    text: String,
}

impl Clock {
    fn timestamp(&mut self, now: SystemTime) -> &str {
        self.text.clear();
        let Ok(since_epoch) = now.duration_since(SystemTime::UNIX_EPOCH) else {
            self.text = crate::time::timestamp_millis(now);
            return &self.text;
        };
        let second = since_epoch.as_secs();
        if self.second != Some(second) {
            let whole =
                crate::time::timestamp_millis(SystemTime::UNIX_EPOCH + Duration::from_secs(second));
            match whole.strip_suffix("000Z") {
                Some(prefix) => {
                    self.prefix.clear();
                    self.prefix.push_str(prefix);
                    self.second = Some(second);
                }
                None => {
                    self.second = None;
                    self.text = crate::time::timestamp_millis(now);
                    return &self.text;
                }
            }
        }
        let millis = since_epoch.subsec_millis();
        self.text.push_str(&self.prefix);
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.text.push(char::from(b'0' + digit as u8));
        }
        self.text.push('Z');
        &self.text
    }
}

/// Bytes waiting for the writer before loggers wait for it: about 10 ms of
/// request lines at 80,000 requests/s, time enough for a writer thread
/// that the scheduler put aside. Each of the two buffers stays within it, so
/// a lagging writer costs at most twice this in resident memory (the bound
/// was 1 MiB, and a full queue then held 2-3 MiB of a 20 MB budget).
const PENDING_BYTES: usize = 256 * 1024;
/// How long the writer lets lines gather before it takes them. Each time it
/// wakes, it preempts a runtime worker that shares its core: at 2 ms, that
/// cost the default level about 0.5 µs of CPU per request at 50,000
/// requests/s on one core.
const GATHER: Duration = Duration::from_millis(8);
/// Pending bytes at which loggers cut the gathering short, so that it never
/// holds them at the bound: about 5 ms of request lines at 80,000
/// requests/s.
const URGE_BYTES: usize = PENDING_BYTES / 2;
/// What a buffer starts with: a batch at 80,000 requests/s is about 60 KB.
const BATCH_CAPACITY: usize = 64 * 1024;
/// A buffer grown past the bound (by one line longer than the room left) is
/// replaced once batches are small again.
const KEPT_BATCH_CAPACITY: usize = PENDING_BYTES;

/// Lines on their way to the output, and the writer thread that takes them.
struct Queue {
    state: Mutex<QueueState>,
    /// [`GATHER`], but for tests.
    gather: Duration,
    /// The writer waits here when it has nothing to write.
    work: Condvar,
    /// Loggers waiting for room, and [`Queue::flush`], wait here.
    written: Condvar,
}

struct QueueState {
    pending: Vec<u8>,
    /// Bytes ever queued, and ever written (or failed to write).
    queued: u64,
    written: u64,
    /// The writer is waiting on `work` and must be woken.
    idle: bool,
    /// The writer is letting lines gather (waiting on `work` with a
    /// timeout) and is to be woken once [`URGE_BYTES`] are pending, or
    /// for a flush.
    gathering: bool,
    /// Threads waiting on `written`.
    waiting: usize,
}

impl QueueState {
    /// Whether the writer waits on `work` (idle or gathering) and so needs
    /// a notification; it counts as awake from here on.
    fn wake_writer(&mut self) -> bool {
        let waits = self.idle || self.gathering;
        self.idle = false;
        self.gathering = false;
        waits
    }
}

impl Queue {
    /// Starts the writer thread; the queue lives as long as the process.
    fn spawn(out: Box<dyn Write + Send>) -> &'static Queue {
        Queue::spawn_gathering(out, GATHER)
    }

    fn spawn_gathering(mut out: Box<dyn Write + Send>, gather: Duration) -> &'static Queue {
        let queue: &'static Queue = Box::leak(Box::new(Queue {
            gather,
            state: Mutex::new(QueueState {
                pending: Vec::with_capacity(BATCH_CAPACITY),
                queued: 0,
                written: 0,
                idle: false,
                gathering: false,
                waiting: 0,
            }),
            work: Condvar::new(),
            written: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || queue.write_forever(&mut *out))
            .expect("spawn the log writer thread");
        queue
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `line` (whole lines only), waiting while the queue is full.
    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        // A line that does not fit waits for an empty queue; one longer
        // than the bound then goes alone.
        while !state.pending.is_empty() && state.pending.len() + line.len() > PENDING_BYTES {
            if state.wake_writer() {
                self.work.notify_one();
            }
            state.waiting += 1;
            state = self
                .written
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        state.pending.extend_from_slice(line);
        state.queued += line.len() as u64;
        // An idle writer is woken for any line, a gathering one only once
        // URGE_BYTES are pending.
        if (state.idle || state.pending.len() >= URGE_BYTES) && state.wake_writer() {
            drop(state);
            self.work.notify_one();
        }
    }

    /// Waits up to `limit` until everything queued so far is written.
    fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        let target = state.queued;
        if state.written < target && state.wake_writer() {
            self.work.notify_one();
        }
        while state.written < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state.waiting += 1;
            state = self
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiting -= 1;
        }
    }

    fn write_forever(&self, out: &mut dyn Write) {
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH_CAPACITY);
        loop {
            let mut state = self.lock();
            while state.pending.is_empty() {
                state.idle = true;
                state = self
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.idle = false;
            // Not idle, so loggers append without waking anyone until
            // URGE_BYTES are pending. A thread already waiting for the
            // writer (a flush, a logger at the bound) ends it at once.
            state.gathering = state.waiting == 0;
            let deadline = Instant::now() + self.gather;
            while state.gathering {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .work
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.gathering = false;
            std::mem::swap(&mut state.pending, &mut batch);
            let upto = state.queued;
            // Loggers held at the bound have room again; they need not wait
            // for this write.
            if state.waiting > 0 {
                self.written.notify_all();
            }
            drop(state);
            // A failed write (stderr closed) is not retried: it would only
            // fail again, and loggers must not wait for it.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            // The two buffers take turns, so both shrink after a burst.
            if batch.capacity() > KEPT_BATCH_CAPACITY && batch.len() < KEPT_BATCH_CAPACITY / 2 {
                batch = Vec::with_capacity(BATCH_CAPACITY);
            }
            batch.clear();
            let mut state = self.lock();
            state.written = upto;
            if state.waiting > 0 {
                self.written.notify_all();
            }
        }
    }
}

/// One log line, without the newline.
pub fn render(format: LogFormat, timestamp: &str, record: &log::Record<'_>) -> String {
    let mut line = Vec::new();
    render_into(format, timestamp, record, &mut line);
    String::from_utf8(line).expect("log lines are UTF-8")
}

/// Appends one log line, without the newline, to `out`.
fn render_into(format: LogFormat, timestamp: &str, record: &log::Record<'_>, out: &mut Vec<u8>) {
    match format {
        LogFormat::Text => {
            push_text_head(out, timestamp, record.level(), record.target());
            match record.args().as_str() {
                Some(text) => out.extend_from_slice(text.as_bytes()),
                None => {
                    let _ = std::fmt::Write::write_fmt(&mut Utf8(out), *record.args());
                }
            }
            let _ = record.key_values().visit(&mut TextFields(out));
        }
        LogFormat::Json => {
            let mut object = serde_json::Map::new();
            object.insert("ts".into(), timestamp.into());
            object.insert("level".into(), record.level().as_str().into());
            object.insert("target".into(), record.target().into());
            object.insert("msg".into(), record.args().to_string().into());
            let _ = record.key_values().visit(&mut JsonFields(&mut object));
            let _ = serde_json::to_writer(&mut *out, &serde_json::Value::Object(object));
        }
    }
}

/// The target of the request and response lines.
pub const SERVER_TARGET: &str = "ec2metaproxy::server";

/// Set by [`init`] for text output: where the request lines go directly.
static DIRECT: OnceLock<Direct> = OnceLock::new();

struct Direct {
    queue: &'static Queue,
    /// The filter lets [`SERVER_TARGET`]'s info lines through (fixed at
    /// start-up, as the filter is).
    request_lines: bool,
}

/// The line logged when a request arrives.
pub struct RequestLine<'a> {
    /// A UUID: never needs quoting.
    pub id: &'a str,
    /// An IP address: never needs quoting.
    pub remote: &'a str,
    pub method: &'a str,
    pub path: &'a str,
}

/// The line logged when its answer is sent.
pub struct ResponseLine<'a> {
    /// A UUID: never needs quoting.
    pub id: &'a str,
    pub status: u16,
    pub container: &'a str,
    pub alias: &'a str,
    /// Logged as `ms`, to the microsecond: enough to read, short to write.
    pub elapsed: Duration,
    pub reason: Option<&'a str>,
}

/// A line with fixed fields, logged for every request. With text output it
/// is written straight into the line buffer, in the bytes the `log` path
/// writes (a test renders both ways): through `log`'s key-value visitor,
/// the two lines cost about 2.4k instructions per request, a dynamic cast
/// and a quoting scan per field. JSON output, and any other logger (as in
/// tests), take the `log` path.
trait FixedLine {
    const MESSAGE: &'static str;

    /// Appends ` key=value` for each field, as [`TextFields`] would.
    fn push_text_fields(&self, out: &mut Vec<u8>);

    /// Calls `f` with the fields as `log` key-values.
    fn with_fields(&self, f: impl FnOnce(&[(&str, Value<'_>)]));

    /// Calls `f` with the line as a `log` record, as `log::info!` makes it.
    fn with_record(&self, f: impl FnOnce(&log::Record<'_>)) {
        self.with_fields(|fields| {
            f(&log::Record::builder()
                .level(log::Level::Info)
                .target(SERVER_TARGET)
                .args(format_args!("{}", Self::MESSAGE))
                .key_values(&fields)
                .build())
        })
    }

    /// The whole text line, without the newline.
    fn push_text(&self, timestamp: &str, out: &mut Vec<u8>) {
        push_text_head(out, timestamp, log::Level::Info, SERVER_TARGET);
        out.extend_from_slice(Self::MESSAGE.as_bytes());
        self.push_text_fields(out);
    }

    fn log(&self) {
        match DIRECT.get() {
            Some(direct) if direct.request_lines => push_line(direct.queue, |timestamp, line| {
                self.push_text(timestamp, line)
            }),
            Some(_) => {}
            None if log::Level::Info <= log::max_level() => {
                self.with_record(|record| log::logger().log(record))
            }
            None => {}
        }
    }
}

impl FixedLine for RequestLine<'_> {
    const MESSAGE: &'static str = "request";

    fn push_text_fields(&self, out: &mut Vec<u8>) {
        debug_assert!(!needs_quotes(self.id.as_bytes()) && !needs_quotes(self.remote.as_bytes()));
        out.extend_from_slice(b" id=");
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b" remote=");
        out.extend_from_slice(self.remote.as_bytes());
        out.extend_from_slice(b" method=");
        push_text_value(out, self.method);
        out.extend_from_slice(b" path=");
        push_text_value(out, self.path);
    }

    fn with_fields(&self, f: impl FnOnce(&[(&str, Value<'_>)])) {
        f(&[
            ("id", Value::from(self.id)),
            ("remote", Value::from(self.remote)),
            ("method", Value::from(self.method)),
            ("path", Value::from(self.path)),
        ])
    }
}

impl FixedLine for ResponseLine<'_> {
    const MESSAGE: &'static str = "response";

    fn push_text_fields(&self, out: &mut Vec<u8>) {
        debug_assert!(!needs_quotes(self.id.as_bytes()));
        out.extend_from_slice(b" id=");
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b" status=");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b" container=");
        push_text_value(out, self.container);
        out.extend_from_slice(b" alias=");
        push_text_value(out, self.alias);
        out.extend_from_slice(b" ms=");
        let micros = self.micros();
        if micros < THOUSANDTHS_LIMIT {
            push_whole_thousandths(out, micros);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut Utf8(out), format_args!("{}", self.ms()));
        }
        if let Some(reason) = self.reason {
            out.extend_from_slice(b" reason=");
            push_text_value(out, reason);
        }
    }

    fn with_fields(&self, f: impl FnOnce(&[(&str, Value<'_>)])) {
        let fields = [
            ("id", Value::from(self.id)),
            ("status", Value::from(self.status)),
            ("container", Value::from(self.container)),
            ("alias", Value::from(self.alias)),
            ("ms", Value::from(self.ms())),
            ("reason", Value::from(self.reason.unwrap_or_default())),
        ];
        f(&fields[..if self.reason.is_some() { 6 } else { 5 }])
    }
}

impl RequestLine<'_> {
    /// Logs the line at info, target [`SERVER_TARGET`].
    pub fn log(&self) {
        FixedLine::log(self)
    }
}

impl ResponseLine<'_> {
    /// Logs the line at info, target [`SERVER_TARGET`].
    pub fn log(&self) {
        FixedLine::log(self)
    }

    fn micros(&self) -> u64 {
        let micros = (self.elapsed.as_nanos() + 500) / 1000;
        u64::try_from(micros).unwrap_or(u64::MAX)
    }

    /// `ms` as a number, for JSON and other loggers.
    fn ms(&self) -> f64 {
        self.micros() as f64 / 1000.0
    }
}

/// `[timestamp LEVEL target] `, the start of every text line.
fn push_text_head(out: &mut Vec<u8>, timestamp: &str, level: log::Level, target: &str) {
    out.push(b'[');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    let level = level.as_str();
    out.extend_from_slice(level.as_bytes());
    out.extend(std::iter::repeat_n(
        b' ',
        5usize.saturating_sub(level.len()),
    ));
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b"] ");
}

/// Formats into a byte buffer directly (`io::Write` on a Vec goes through
/// an adapter that handles I/O errors that cannot happen here).
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

/// ` key=value`, quoted (Rust string syntax) when the value is empty or
/// holds a space, a quote or `=`. Strings, integers and the thousandths of
/// `ms` are written without the formatting machinery: two lines per request
/// make it a good part of a request's cost.
struct TextFields<'a>(&'a mut Vec<u8>);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let out = &mut *self.0;
        out.push(b' ');
        out.extend_from_slice(key.as_str().as_bytes());
        out.push(b'=');
        if let Some(text) = value.to_borrowed_str() {
            push_text_value(out, text);
        } else if let Some(n) = value.to_u64() {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        } else if let Some(n) = value.to_i64() {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        } else if !value.to_f64().is_some_and(|x| push_thousandths(out, x)) {
            let start = out.len();
            let _ = std::fmt::Write::write_fmt(&mut Utf8(out), format_args!("{value}"));
            if needs_quotes(&out[start..]) {
                let text = String::from_utf8_lossy(&out[start..]).into_owned();
                out.truncate(start);
                let _ = write!(out, "{text:?}");
            }
        }
        Ok(())
    }
}

fn needs_quotes(text: &[u8]) -> bool {
    text.is_empty() || text.iter().any(|b| matches!(b, b' ' | b'"' | b'='))
}

fn push_text_value(out: &mut Vec<u8>, text: &str) {
    if needs_quotes(text.as_bytes()) {
        let _ = write!(out, "{text:?}");
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Appends `x` as its `Display` would, if it is a whole number of
/// thousandths (such as `ms`); false, appending nothing, otherwise. Such a
/// number's shortest round-trip form is its decimal with the trailing zeros
/// dropped, as long as an ulp is far below a thousandth (below 2^40
/// thousandths).
fn push_thousandths(out: &mut Vec<u8>, x: f64) -> bool {
    const LIMIT: f64 = THOUSANDTHS_LIMIT as f64 / 1000.0;
    if !(0.0..LIMIT).contains(&x) || x.is_sign_negative() {
        return false;
    }
    let thousandths = (x * 1000.0).round();
    if thousandths / 1000.0 != x {
        return false;
    }
    push_whole_thousandths(out, thousandths as u64);
    true
}

/// Thousandths below this, divided by 1000, are written by `Display` as
/// [`push_whole_thousandths`] writes them.
const THOUSANDTHS_LIMIT: u64 = 1 << 40;

/// Appends `thousandths / 1000` in decimal, without trailing zeros.
fn push_whole_thousandths(out: &mut Vec<u8>, thousandths: u64) {
    let (whole, fraction) = (thousandths / 1000, thousandths % 1000);
    out.extend_from_slice(itoa::Buffer::new().format(whole).as_bytes());
    if fraction != 0 {
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10].map(|d| b'0' + d as u8);
        let len = if fraction % 100 == 0 {
            1
        } else if fraction % 10 == 0 {
            2
        } else {
            3
        };
        out.push(b'.');
        out.extend_from_slice(&digits[..len]);
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let json = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(x) = value.to_f64() {
            x.into()
        } else if let Some(b) = value.to_bool() {
            b.into()
        } else {
            value.to_string().into()
        };
        self.0.insert(key.to_string(), json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LogFormat) -> String {
        let fields: &[(&str, Value<'_>)] = &[
            ("id", Value::from("7c0e")),
            ("status", Value::from(404u64)),
            ("ms", Value::from(0.084f64)),
            ("reason", Value::from("no running container")),
        ];
        render(
            format,
            "2026-11-25T00:00:00.000Z",
            &log::Record::builder()
                .level(log::Level::Info)
                .target("ec2metaproxy::server")
                .args(format_args!("response"))
                .key_values(&fields)
                .build(),
        )
    }

    #[test]
    fn text_lines_read_as_key_value_pairs() {
        assert_eq!(
            line(LogFormat::Text),
            "[2026-11-25T00:00:00.000Z INFO  ec2metaproxy::server] response id=7c0e status=404 ms=0.084 reason=\"no running container\""
        );
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        let parsed: serde_json::Value = serde_json::from_str(&line(LogFormat::Json)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "ts": "2026-11-25T00:00:00.000Z", "level": "INFO", "target": "ec2metaproxy::server",
                "msg": "response", "id": "7c0e", "status": 404, "ms": 0.084,
                "reason": "no running container"
            })
        );
    }
    /// A text line of target `t` at a fixed time.
    fn text_line(
        level: log::Level,
        args: std::fmt::Arguments<'_>,
        fields: &[(&str, Value<'_>)],
    ) -> String {
        render(
            LogFormat::Text,
            "2026-11-25T00:00:00.000Z",
            &log::Record::builder()
                .level(level)
                .target("t")
                .args(args)
                .key_values(&fields)
                .build(),
        )
    }

    #[test]
    fn text_lines_format_arguments_and_quote_what_needs_it() {
        let fields: &[(&str, Value<'_>)] = &[
            ("empty", Value::from("")),
            ("eq", Value::from("a=b")),
            ("quote", Value::from("say \"hi\"\n")),
            ("plain", Value::from(7i64)),
        ];
        let n = 3;
        let text = text_line(
            log::Level::Warn,
            format_args!("gave up after {n} tries"),
            fields,
        );
        assert_eq!(
            text,
            "[2026-11-25T00:00:00.000Z WARN  t] gave up after 3 tries empty=\"\" eq=\"a=b\" quote=\"say \\\"hi\\\"\\n\" plain=7"
        );
    }

    #[test]
    fn thousandths_are_written_as_display_writes_them() {
        let mut out = Vec::new();
        let mut check = |x: f64| {
            out.clear();
            if push_thousandths(&mut out, x) {
                assert_eq!(std::str::from_utf8(&out).unwrap(), x.to_string(), "{x:?}");
                true
            } else {
                assert!(out.is_empty());
                false
            }
        };
        // Every value of `ms` up to 20 minutes, as the server computes it.
        for micros in 0..1_200_000_000u64 / 997 {
            let micros = micros * 997;
            assert!(check((micros as f64).round() / 1000.0));
        }
        for micros in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            999,
            1000,
            1001,
            1010,
            1100,
            (1 << 40) - 1,
        ] {
            assert!(check(micros as f64 / 1000.0));
        }
        // Everything else is left to Display.
        for x in [
            0.0845,
            1e-7,
            -1.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            1e12,
            0.1 + 0.2,
        ] {
            assert!(!check(x), "{x:?}");
        }
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let fields: &[(&str, Value<'_>)] = &[
            ("u", Value::from(u64::MAX)),
            ("i", Value::from(i64::MIN)),
            ("s", Value::from(200u16)),
            ("f", Value::from(2.5f64)),
            ("g", Value::from(1e-7f64)),
            ("b", Value::from(true)),
        ];
        let text = text_line(log::Level::Info, format_args!("m"), fields);
        assert_eq!(
            text,
            format!(
                "[2026-11-25T00:00:00.000Z INFO  t] m u={} i={} s=200 f=2.5 g={} b=true",
                u64::MAX,
                i64::MIN,
                1e-7f64
            )
        );
    }

    /// A request line rendered directly and through `log`.
    fn both_ways<L: FixedLine>(line: &L) -> (String, String) {
        let timestamp = "2026-11-25T00:00:00.000Z";
        let mut direct = Vec::new();
        line.push_text(timestamp, &mut direct);
        let mut via_log = String::new();
        line.with_record(|record| via_log = render(LogFormat::Text, timestamp, record));
        (String::from_utf8(direct).unwrap(), via_log)
    }

    #[test]
    fn request_lines_written_directly_are_what_log_writes() {
        let id = "0f8c7f3e-6a1b-4c55-9d2e-1b7a2f0c9e11";
        let texts = [
            "",
            "-",
            "GET",
            "/latest/meta-data/iam/security-credentials/web",
            "a b",
            "a=b",
            "say \"hi\"",
            "tab\there\n",
            "caf\u{e9}",
            "http://169.254.169.254/latest/",
        ];
        let elapsed_values = [
            0,
            499,
            500,
            1_000,
            84_000,
            1_000_000,
            12_500_400,
            1_234_567_000,
            (1 << 40) * 1000 - 1,
            (1 << 40) * 1000,
            u64::MAX,
        ]
        .map(Duration::from_nanos);
        let mut checked = 0;
        for text in texts {
            for remote in ["172.17.0.2", "fd00::2"] {
                let (direct, via_log) = both_ways(&RequestLine {
                    id,
                    remote,
                    method: text,
                    path: text,
                });
                assert_eq!(direct, via_log);
                checked += 1;
            }
            for (i, elapsed) in elapsed_values.into_iter().enumerate() {
                let (direct, via_log) = both_ways(&ResponseLine {
                    id,
                    status: [200, 404, 0, u16::MAX][i % 4],
                    container: text,
                    alias: texts[i % texts.len()],
                    elapsed,
                    reason: (i % 2 == 1).then_some(text),
                });
                assert_eq!(direct, via_log);
                checked += 1;
            }
        }
        assert_eq!(checked, texts.len() * (2 + elapsed_values.len()));
        // And what both write, once in full.
        let (direct, _) = both_ways(&ResponseLine {
            id,
            status: 404,
            container: "web-1",
            alias: "-",
            elapsed: Duration::from_nanos(84_499),
            reason: Some("no running container has this address"),
        });
        assert_eq!(
            direct,
            format!("[2026-11-25T00:00:00.000Z INFO  ec2metaproxy::server] response id={id} status=404 container=web-1 alias=- ms=0.084 reason=\"no running container has this address\"")
        );
    }

    #[test]
    fn the_clock_writes_what_timestamp_millis_writes() {
        let mut clock = Clock::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        // Within one second, across seconds, backwards, and far apart.
        for step_ms in [
            0u64, 1, 999, 1000, 1001, 59_999, 3_600_000, 86_399_999, 7, 0,
        ] {
            for base in [
                start,
                SystemTime::UNIX_EPOCH,
                start + Duration::from_secs(40 * 365 * 86_400),
            ] {
                let t = base + Duration::from_millis(step_ms) + Duration::from_nanos(999_999);
                assert_eq!(
                    clock.timestamp(t),
                    crate::time::timestamp_millis(t),
                    "{t:?}"
                );
            }
        }
    }

    /// A `Write` into a shared Vec, for the writer thread's tests.
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_flush() {
        let sink = Sink::default();
        let queue = Queue::spawn(Box::new(sink.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        queue.push(format!("thread {t} line {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        queue.flush(Duration::from_secs(10));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in out.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let t: usize = words[1].parse().unwrap();
            assert_eq!(words[3].parse::<usize>().unwrap(), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    /// An output that accepts nothing until told to.
    struct Stalled(std::sync::Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, changed) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_holds_loggers_at_the_bound_and_loses_nothing() {
        let gate = std::sync::Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let queue = Queue::spawn(Box::new(Stalled(gate.clone(), sink.clone())));
        let line = [b'x'; 999]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let lines = 3 * PENDING_BYTES / line.len();
        let logger = std::thread::spawn(move || {
            for _ in 0..lines {
                queue.push(&line);
            }
        });
        // The writer holds one batch and the queue fills up to the bound,
        // where the logger waits.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = queue.lock();
            assert!(state.pending.len() <= PENDING_BYTES);
            if state.waiting > 0 && state.pending.len() + 1000 > PENDING_BYTES {
                // No buffer grew past the bound to get there.
                assert!(state.pending.capacity() <= PENDING_BYTES);
                break;
            }
            drop(state);
            assert!(
                Instant::now() < deadline,
                "the logger was never held at the bound"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!logger.is_finished());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        queue.flush(Duration::from_secs(10));
        assert_eq!(sink.0.lock().unwrap().len(), lines * 1000);
    }

    /// Waits up to 10 s for `sink` to hold `len` bytes.
    fn wait_for_bytes(sink: &Sink, len: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().len() < len {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Waits up to 10 s for the writer to start gathering.
    fn wait_until_gathering(queue: &Queue) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !queue.lock().gathering {
            assert!(Instant::now() < deadline, "the writer never woke");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lines_piling_up_cut_the_gathering_short() {
        let sink = Sink::default();
        // Far longer than the test may take: only the pile-up can end it.
        let queue = Queue::spawn_gathering(Box::new(sink.clone()), Duration::from_secs(600));
        let line = [b'z'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        queue.push(&line);
        wait_until_gathering(queue);
        // One line short of URGE_BYTES, then the line that reaches it.
        let lines = URGE_BYTES / line.len();
        for _ in 2..lines {
            queue.push(&line);
        }
        assert!(
            queue.lock().gathering,
            "woken before URGE_BYTES were pending"
        );
        queue.push(&line);
        assert!(wait_for_bytes(&sink, lines * line.len()));
    }

    #[test]
    fn flush_does_not_wait_for_the_gathering() {
        let sink = Sink::default();
        let queue = Queue::spawn_gathering(Box::new(sink.clone()), Duration::from_secs(600));
        queue.push(b"one line\n");
        wait_until_gathering(queue);
        let started = Instant::now();
        queue.flush(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(&*sink.0.lock().unwrap(), b"one line\n");
    }

    #[test]
    fn a_line_longer_than_the_bound_goes_alone_and_its_buffer_is_given_back() {
        let sink = Sink::default();
        let queue = Queue::spawn(Box::new(sink.clone()));
        let mut long = vec![b'y'; 2 * PENDING_BYTES];
        long.push(b'\n');
        queue.push(b"before\n");
        queue.push(&long);
        queue.push(b"after\n");
        queue.flush(Duration::from_secs(10));
        let written = sink.0.lock().unwrap().clone();
        assert_eq!(written.len(), long.len() + 13);
        assert!(written.starts_with(b"before\n") && written.ends_with(b"after\n"));
        // The long line grew a buffer past the bound; small batches give it back.
        for _ in 0..4 {
            queue.push(b"small\n");
            queue.flush(Duration::from_secs(10));
        }
        assert!(queue.lock().pending.capacity() <= KEPT_BATCH_CAPACITY);
    }
}
