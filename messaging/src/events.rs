//! Encoding and decoding of the events on the queues, in the one wire format documented in
//! `events.proto`: the body is a protobuf `Event`; the AMQP `content_type` and `type` name it.

use prost::Message;
pub use proto::events::v1::{
    CONTENT_TYPE, ConversionFailed, ConversionSucceeded, Event, MESSAGE_TYPE, VideoUploaded,
    WebhookDue, WebhookEndpointDisabled, event::Payload,
};
use std::time::SystemTime;

/// Why a message body is not an event this version understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventDecodeError {
    /// The AMQP content type names another encoding.
    #[error("unexpected content type {0:?}, expected {CONTENT_TYPE:?}")]
    ContentType(String),
    /// The body is not a protobuf `Event`.
    #[error("body is not a valid event: {0}")]
    Malformed(String),
    /// The envelope carries no payload this version knows.
    #[error("event {0} has no payload this version understands")]
    UnknownPayload(String),
}

/// Wraps a payload in a new envelope with a fresh id, the current time, and the current request
/// id (`service_kit::request_id`): the HTTP request's in the gateway, the consumed event's in a
/// worker.
pub fn new_event(payload: Payload) -> Event {
    Event {
        event_id: uuid::Uuid::new_v4().to_string(),
        occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        request_id: service_kit::request_id::current().unwrap_or_default(),
        payload: Some(payload),
    }
}

/// The routing key of a conversion outcome (`job.succeeded`, `job.failed`): what the outcome
/// exchange routes on and what a webhook's `type` says; `None` for any other event.
pub fn outcome_type(event: &Event) -> Option<&'static str> {
    match event.payload.as_ref()? {
        Payload::ConversionSucceeded(_) => Some("job.succeeded"),
        Payload::ConversionFailed(_) => Some("job.failed"),
        _ => None,
    }
}

/// The message body for `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    event.encode_to_vec()
}

/// Decodes a message body. `content_type` is the AMQP property, when the message had one.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Event, EventDecodeError> {
    if let Some(content_type) = content_type
        && content_type != CONTENT_TYPE
    {
        return Err(EventDecodeError::ContentType(content_type.to_owned()));
    }
    let event = Event::decode(body).map_err(|e| EventDecodeError::Malformed(e.to_string()))?;
    if event.payload.is_none() {
        return Err(EventDecodeError::UnknownPayload(event.event_id));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded() -> Payload {
        Payload::VideoUploaded(VideoUploaded {
            job_id: "job".into(),
            video_id: "video".into(),
            owner_id: "1".into(),
            owner_email: "a@example.com".into(),
            original_filename: "a.mp4".into(),
        })
    }

    #[test]
    fn encoded_event_decodes_to_the_same_event() {
        let event = new_event(uploaded());
        assert_eq!(decode(&encode(&event), Some(CONTENT_TYPE)).unwrap(), event);
        assert_eq!(decode(&encode(&event), None).unwrap(), event);
    }

    #[test]
    fn decode_rejects_other_encodings_garbage_and_empty_envelopes() {
        let body = encode(&new_event(uploaded()));
        assert_eq!(
            decode(&body, Some("application/json")),
            Err(EventDecodeError::ContentType("application/json".into()))
        );
        assert!(matches!(
            decode(b"\xff\xff\xff", None),
            Err(EventDecodeError::Malformed(_))
        ));
        let empty = Event {
            event_id: "e1".into(),
            occurred_at: None,
            request_id: String::new(),
            payload: None,
        };
        assert_eq!(
            decode(&encode(&empty), None),
            Err(EventDecodeError::UnknownPayload("e1".into()))
        );
    }
}
