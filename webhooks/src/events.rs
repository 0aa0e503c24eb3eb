//! The event types an endpoint can ask for, and the body every message has:
//! `{type, timestamp, data}`.

/// A job's audio file is ready.
pub const JOB_SUCCEEDED: &str = "job.succeeded";
/// A job failed, with the reason the user is told.
pub const JOB_FAILED: &str = "job.failed";
/// The types an endpoint can ask for; an endpoint that names none gets them all.
pub const EVENT_TYPES: [&str; 2] = [JOB_SUCCEEDED, JOB_FAILED];
/// A test message its owner asked for (`POST /webhooks/{id}/test`); every endpoint takes it.
pub const PING: &str = "ping";

/// A message's body: `{"type", "timestamp" (RFC 3339), "data"}`, as bytes to sign and send.
pub fn body(
    event_type: &str,
    timestamp: std::time::SystemTime,
    data: serde_json::Value,
) -> Vec<u8> {
    let timestamp = prost_types::Timestamp::from(timestamp).to_string();
    serde_json::to_vec(&serde_json::json!({
        "type": event_type,
        "timestamp": timestamp,
        "data": data,
    }))
    .expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_says_its_type_and_time_around_its_data() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_500);
        let body = body(PING, at, serde_json::json!({"endpoint_id": "e1"}));
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["type"], "ping");
        assert_eq!(parsed["timestamp"], "2025-12-06T05:46:40.500Z");
        assert_eq!(parsed["data"]["endpoint_id"], "e1");
    }
}
