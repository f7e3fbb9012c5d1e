//! Log output: text for people (the default) or one JSON object per line for
//! log shippers (`"logFormat": "json"`). Structured fields are `log`
//! key-values, so the request and response lines carry `id`, `status`,
//! `container`, `alias` and `ms` as fields in both formats.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Installs the logger. `RUST_LOG` wins over `default_filter`.
///
/// Lines go to stderr through one writer thread that batches them: with two
/// lines per request, a write(2) per line cost more than the request itself.
/// The queue is bounded, so a stderr that stops draining slows requests
/// rather than growing memory or dropping lines.
pub fn init(format: LogFormat, default_filter: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    builder.format(move |buf, record| {
        let line = render(format, &timestamp(), record);
        writeln!(buf, "{line}")
    });
    builder.target(env_logger::Target::Pipe(Box::new(BatchedStderr::spawn())));
    builder.init();
}

/// Waits (up to a second) until every line logged so far is written.
/// Call before the process exits.
pub fn flush() {
    let Some(lines) = WRITER.get() else { return };
    let (done, wait) = std::sync::mpsc::channel();
    if lines.send(Message::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(std::time::Duration::from_secs(1));
    }
}

/// Lines queued for the writer thread before loggers wait.
const PENDING_LINES: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The writer thread's queue, for [`flush`].
static WRITER: std::sync::OnceLock<std::sync::mpsc::SyncSender<Message>> =
    std::sync::OnceLock::new();

/// A `Write` that hands each line to the writer thread.
struct BatchedStderr {
    lines: std::sync::mpsc::SyncSender<Message>,
}

impl BatchedStderr {
    fn spawn() -> BatchedStderr {
        let (lines, pending) = std::sync::mpsc::sync_channel::<Message>(PENDING_LINES);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
                while let Ok(first) = pending.recv() {
                    let mut next = Some(first);
                    let mut flushed = Vec::new();
                    while let Some(message) = next {
                        match message {
                            Message::Line(line) => {
                                let _ = out.write_all(&line);
                            }
                            Message::Flush(done) => flushed.push(done),
                        }
                        next = pending.try_recv().ok();
                    }
                    let _ = out.flush();
                    for done in flushed {
                        let _ = done.send(());
                    }
                }
            })
            .expect("spawn the log writer thread");
        let _ = WRITER.set(lines.clone());
        BatchedStderr { lines }
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines
            .send(Message::Line(buf.to_vec()))
            .map_err(|_| std::io::Error::other("log writer stopped"))?;
        Ok(buf.len())
    }

    /// env_logger flushes after every line; the writer thread flushes
    /// whenever its queue runs empty instead.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn timestamp() -> String {
    crate::imds::document::timestamp_millis(std::time::SystemTime::now())
}

/// One log line, without the newline.
pub fn render(format: LogFormat, timestamp: &str, record: &log::Record<'_>) -> String {
    match format {
        LogFormat::Text => {
            let mut line = format!(
                "[{timestamp} {:<5} {}] {}",
                record.level(),
                record.target(),
                record.args()
            );
            let _ = record.key_values().visit(&mut TextFields(&mut line));
            line
        }
        LogFormat::Json => {
            let mut object = serde_json::Map::new();
            object.insert("ts".into(), timestamp.into());
            object.insert("level".into(), record.level().as_str().into());
            object.insert("target".into(), record.target().into());
            object.insert("msg".into(), record.args().to_string().into());
            let _ = record.key_values().visit(&mut JsonFields(&mut object));
            serde_json::Value::Object(object).to_string()
        }
    }
}

struct TextFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let text = value.to_string();
        if text.is_empty() || text.contains([' ', '"', '=']) {
            self.0.push_str(&format!(" {key}={text:?}"));
        } else {
            self.0.push_str(&format!(" {key}={text}"));
        }
        Ok(())
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
}
