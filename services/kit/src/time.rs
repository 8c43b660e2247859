//! Conversions between chrono and protobuf timestamps.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// A protobuf timestamp of `at`.
pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant of a protobuf timestamp, if it is in range.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}
