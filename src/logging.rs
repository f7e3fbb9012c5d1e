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
pub fn init(format: LogFormat, default_filter: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    builder.format(move |buf, record| {
        let line = render(format, &timestamp(), record);
        writeln!(buf, "{line}")
    });
    builder.init();
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
