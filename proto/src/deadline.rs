//! A client's deadline along the mesh: the `grpc-timeout` header the gateway
//! reads, and the time left that each hop passes on to the next inside its
//! messages (`time_left`), so that the deadline bounds the whole path.
//! Header format (gRPC over HTTP/2): at most eight ASCII digits followed by a
//! unit, `H` `M` `S` `m` `u` `n`.

use std::time::Duration;
use tonic::metadata::MetadataMap;

const HEADER: &str = "grpc-timeout";

/// The longest deadline anything here holds: the largest the header can say
/// (`99999999H`, some 11,000 years). A `time_left` past it is read as it, so
/// that no instant computed from one overflows.
pub const MAX: Duration = Duration::from_secs(99_999_999 * 3600);

/// A caller's deadline as a hop holds it: what was left of it on arrival,
/// and the instant it runs out.
#[derive(Clone, Copy, Debug)]
pub struct ClientDeadline {
    pub limit: Duration,
    pub at: tokio::time::Instant,
}

impl ClientDeadline {
    /// The deadline `limit` (at most [`MAX`]) after `now`.
    pub fn starting(now: tokio::time::Instant, limit: Duration) -> ClientDeadline {
        let limit = limit.min(MAX);
        ClientDeadline {
            limit,
            at: now + limit,
        }
    }

    /// What is left of it at `now`, to travel in a message's `time_left`.
    pub fn time_left(&self, now: tokio::time::Instant) -> prost_types::Duration {
        prost_types::Duration::try_from(self.at.saturating_duration_since(now)).unwrap_or_default()
    }
}

/// The time a message's `time_left` says is left, when it carries one, at
/// most [`MAX`]; one already negative (or malformed) has passed.
pub fn left(time_left: Option<prost_types::Duration>) -> Option<Duration> {
    // Not through prost-types' conversion, which negates the seconds of a
    // negative duration (an overflow at i64::MIN).
    time_left.map(
        |left| match (u64::try_from(left.seconds), u64::try_from(left.nanos)) {
            (Ok(seconds), Ok(nanos)) => Duration::from_secs(seconds)
                .saturating_add(Duration::from_nanos(nanos))
                .min(MAX),
            _ => Duration::ZERO,
        },
    )
}

/// The timeout the caller set, if any; the header's text when it is there
/// but malformed.
pub fn read(metadata: &MetadataMap) -> Result<Option<Duration>, String> {
    let Some(value) = metadata.get(HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("{:?}", value.as_bytes()))?;
    parse(text).map(Some).ok_or_else(|| text.to_string())
}

/// Parses a `grpc-timeout` value; `None` when it is malformed.
pub fn parse(value: &str) -> Option<Duration> {
    // ASCII only, so that the unit is the last byte (cargo fuzz found that
    // a multi-byte last character split inside itself).
    if value.len() < 2 || value.len() > 9 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_at_any_extreme_is_a_deadline_that_can_be_held() {
        let seconds = |seconds: i64, nanos: i32| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(left(None), None);
        assert_eq!(left(seconds(i64::MAX, 999_999_999)), Some(MAX));
        assert_eq!(left(seconds(i64::MIN, 0)), Some(Duration::ZERO));
        assert_eq!(left(seconds(-1, 0)), Some(Duration::ZERO));
        assert_eq!(left(seconds(1, -5)), Some(Duration::ZERO), "malformed");
        assert_eq!(
            left(seconds(2, 1_500_000_000)),
            Some(Duration::from_millis(3500))
        );
        assert_eq!(left(seconds(i64::MAX, i32::MAX)), Some(MAX));
        let now = tokio::time::Instant::now();
        let far = ClientDeadline::starting(now, Duration::MAX);
        assert_eq!(far.limit, MAX);
        assert_eq!(far.time_left(now).seconds, MAX.as_secs() as i64);
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "-5S",
            "123456789S",
            "1.5S",
            "+5S",
            "5 S",
            "5é",
            "é",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tells_a_malformed_header_from_none() {
        let mut metadata = MetadataMap::new();
        assert_eq!(read(&metadata), Ok(None));
        metadata.insert(HEADER, "soon".parse().unwrap());
        assert_eq!(read(&metadata), Err("soon".to_string()));
        metadata.insert(HEADER, "2S".parse().unwrap());
        assert_eq!(read(&metadata), Ok(Some(Duration::from_secs(2))));
    }

    #[test]
    fn the_time_left_travels_and_a_negative_one_has_passed() {
        let now = tokio::time::Instant::now();
        let deadline = ClientDeadline::starting(now, Duration::from_millis(1500));
        let sent = deadline.time_left(now + Duration::from_millis(500));
        assert_eq!(left(Some(sent)), Some(Duration::from_secs(1)));
        assert_eq!(
            deadline.time_left(now + Duration::from_secs(2)),
            prost_types::Duration::default()
        );
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(left(Some(negative)), Some(Duration::ZERO));
        assert_eq!(left(None), None);
    }
}
