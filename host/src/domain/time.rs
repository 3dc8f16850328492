//! Timestamps on the wire: RFC 3339 with an offset in, UTC with milliseconds out
//! (`2025-01-16T09:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a timestamp the way every response writes it.
pub fn format(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp; the offset is required.
pub fn parse(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| "must be an RFC 3339 timestamp with an offset, like 2025-01-16T09:00:00.000Z".to_owned())
}

/// `#[serde(with = "crate::domain::time::millis")]` for `DateTime<Utc>` fields.
pub mod millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes UTC with milliseconds.
    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(ts))
    }

    /// Reads any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "crate::domain::time::millis_opt")]` for `Option<DateTime<Utc>>`.
pub mod millis_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes UTC with milliseconds, or null.
    pub fn serialize<S: Serializer>(ts: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&super::format(ts)),
            None => s.serialize_none(),
        }
    }

    /// Reads an RFC 3339 timestamp or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|r| super::parse(&r).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_converted_to_utc_with_millis() {
        let t = parse("2025-01-16T11:00:00+02:00").unwrap();
        assert_eq!(format(&t), "2025-01-16T09:00:00.000Z");
    }

    #[test]
    fn a_timestamp_without_offset_is_refused() {
        assert!(parse("2025-01-16T09:00:00").is_err());
        assert!(parse("tomorrow").is_err());
    }
}
