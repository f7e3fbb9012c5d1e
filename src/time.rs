//! Wall-clock time as the proxy writes it: Unix seconds, and the
//! timestamps of IMDS documents and log lines.

use std::time::{SystemTime, UNIX_EPOCH};

use ::time::format_description::FormatItem;
use ::time::macros::format_description;
use ::time::OffsetDateTime;

/// `2026-11-22T20:00:00Z`: aws-config rejects `+00:00`.
const TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Log timestamps, with milliseconds.
const TIMESTAMP_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn timestamp_millis(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(TIMESTAMP_MILLIS)
        .expect("a SystemTime formats")
}

pub fn timestamp(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(TIMESTAMP)
        .expect("a SystemTime formats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_end_in_z() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_377_600);
        assert_eq!(timestamp(t), "2026-11-22T20:00:00Z");
    }
}
