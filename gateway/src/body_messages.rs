//! A request body's chunks cut into messages for storage. The HTTP server hands the body
//! over in chunks of whatever size each read of the socket brought (a few bytes to about
//! 400 KiB); storage takes them best in messages of about [`MESSAGE_BYTES`]. Small chunks are
//! gathered; a large one arriving with nothing gathered goes as it is, so most bytes of a big
//! upload are not copied on their way through the gateway (the message's encoding is then
//! their only copy here).

use bytes::{Bytes, BytesMut};

/// Bytes per message sent to storage: big enough to keep per-message costs low, small enough
/// that a few in flight cost little memory.
pub const MESSAGE_BYTES: usize = 256 * 1024;

/// A chunk at least this large, arriving with nothing gathered, is a message by itself.
const DIRECT_BYTES: usize = MESSAGE_BYTES / 4;

/// Chunks on their way to becoming messages, in order.
#[derive(Debug, Default)]
pub struct BodyMessages {
    gathered: BytesMut,
}

impl BodyMessages {
    /// Gathers `chunk` whatever its size: bytes to be looked at before any is sent.
    pub fn hold(&mut self, chunk: &[u8]) {
        self.gathered.extend_from_slice(chunk);
    }

    /// Takes the body's next chunk; a message when one is ready.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.gathered.is_empty() && chunk.len() >= DIRECT_BYTES {
            return Some(chunk);
        }
        self.gathered.extend_from_slice(&chunk);
        (self.gathered.len() >= MESSAGE_BYTES).then(|| self.gathered.split().freeze())
    }

    /// The bytes gathered so far, not yet a message.
    pub fn gathered(&self) -> &[u8] {
        &self.gathered
    }

    /// What is gathered, as the last message (`None` when nothing is).
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.gathered.is_empty()).then(|| self.gathered.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[test]
    fn small_chunks_are_gathered_into_messages_of_about_message_bytes() {
        let mut messages = BodyMessages::default();
        let small = 16 * 1024;
        let mut sent = Vec::new();
        for n in 0..40 {
            sent.extend(messages.push(chunk(small, n)));
        }
        sent.extend(messages.finish());
        let lengths: Vec<usize> = sent.iter().map(Bytes::len).collect();
        assert_eq!(lengths, [MESSAGE_BYTES, MESSAGE_BYTES, 8 * small]);
        let bytes: Vec<u8> = sent.concat();
        let expected: Vec<u8> = (0..40).flat_map(|n| vec![n; small]).collect();
        assert_eq!(bytes, expected, "every byte, in order");
    }

    #[test]
    fn a_large_chunk_with_nothing_gathered_is_sent_without_a_copy() {
        let mut messages = BodyMessages::default();
        let large = chunk(300 * 1024, 7);
        let sent = messages.push(large.clone()).expect("a message by itself");
        assert_eq!(sent.as_ptr(), large.as_ptr(), "the same bytes, not a copy");
        assert!(messages.finish().is_none());
    }

    #[test]
    fn a_large_chunk_behind_gathered_bytes_keeps_its_place() {
        let mut messages = BodyMessages::default();
        messages.hold(b"head");
        assert_eq!(messages.gathered(), b"head");
        let first = messages.push(chunk(MESSAGE_BYTES, 1)).expect("full");
        assert_eq!(&first[..4], b"head");
        assert_eq!(first.len(), 4 + MESSAGE_BYTES);
        let second = messages.push(chunk(DIRECT_BYTES, 2)).expect("direct");
        assert_eq!(second.len(), DIRECT_BYTES);
        assert!(messages.push(chunk(10, 3)).is_none());
        assert_eq!(messages.finish().as_deref(), Some(&[3u8; 10][..]));
    }
}
