//! Wall-clock time as the proxy writes it: Unix seconds, and the
//! timestamps of IMDS documents and log lines.

use std::time::{SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-22T20:00:00Z`: aws-config rejects `+00:00`, boto 2 fractional
/// seconds. Written from the date's parts, which cannot fail, rather than a
/// format description, whose formatting returns a `Result`.
pub fn timestamp(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Log timestamps, with milliseconds.
pub fn timestamp_millis(t: SystemTime) -> String {
    let millis = OffsetDateTime::from(t).millisecond();
    let mut text = timestamp(t);
    text.insert_str(text.len() - 1, &format!(".{millis:03}"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_end_in_z() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_377_600);
        assert_eq!(timestamp(t), "2026-11-22T20:00:00Z");
        let later = t + Duration::from_millis(3_007);
        assert_eq!(timestamp_millis(later), "2026-11-22T20:00:03.007Z");
        assert_eq!(timestamp_millis(t), "2026-11-22T20:00:00.000Z");
    }
}
