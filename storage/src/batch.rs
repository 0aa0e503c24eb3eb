//! Bytes gathered from a stream for one write to a backend, kept as the chunks they arrived in
//! rather than copied into one buffer: the local directory writes them with one vectored
//! write from a blocking thread, so a byte is copied once on its way from the network to the
//! page cache (by the kernel), where gathering it and then handing it to `tokio::fs::File`
//! copied it twice more (a tenth of storage's CPU in an upload, measured with `perf`).
//! GridFS, which stores fixed-size chunks, still gathers them.

use bytes::Bytes;
use std::io::{self, IoSlice, Write};
use tokio::sync::mpsc;

/// The most bytes a writer takes from its queue for one write (see [`next_gathered`]); more
/// than a queue holds today, so only a deeper queue would meet it.
pub const GATHERED_BYTES: usize = 8 * 1024 * 1024;

/// Chunks waiting to be written together, in order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    /// Adds `chunk` at the end.
    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The batch, leaving an empty one in its place.
    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// Adds `later`'s chunks at the end (no byte is copied).
    pub fn append(&mut self, later: Batch) {
        self.len += later.len;
        self.chunks.extend(later.chunks);
    }

    /// Writes every byte to `out` (a blocking writer), in as few calls as it takes them.
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.chunks.iter().map(|c| IoSlice::new(c)).collect();
        let mut unwritten = &mut slices[..];
        while !unwritten.is_empty() {
            match out.write_vectored(unwritten) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut unwritten, written),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl From<Bytes> for Batch {
    /// A batch of one chunk.
    fn from(chunk: Bytes) -> Self {
        let mut batch = Batch::default();
        batch.push(chunk);
        batch
    }
}

/// The next item for a writer from `queue`, with the items already queued behind it taken in
/// (`absorb`) until `full` says no more may join: whatever arrived while the backend stored
/// the last write goes in the next one. A backend that keeps up is sent each batch as it is
/// gathered; one that falls behind (the MongoDB-wire server, on one core) is sent fewer,
/// larger writes. Nothing is waited for but the first item, and only what the queue held
/// is taken, so an upload's memory stays what its queue holds.
pub async fn next_gathered<T>(
    queue: &mut mpsc::Receiver<T>,
    full: impl Fn(&T) -> bool,
    absorb: impl Fn(&mut T, T),
) -> Option<T> {
    let mut gathered = queue.recv().await?;
    while !full(&gathered) {
        match queue.try_recv() {
            Ok(later) => absorb(&mut gathered, later),
            Err(_) => break,
        }
    }
    Some(gathered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `limit` bytes per call, as a kernel may, to exercise the resumption.
    struct Trickle {
        written: Vec<u8>,
        limit: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let taken = buf.len().min(self.limit);
            self.written.extend_from_slice(&buf[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_byte_is_written_in_order_however_few_each_call_takes() {
        let mut batch = Batch::default();
        let parts: [&[u8]; 4] = [b"first ", b"", b"second, longer ", b"third"];
        for part in parts {
            batch.push(Bytes::from_static(part));
        }
        assert_eq!(batch.len(), parts.concat().len());
        for limit in [1, 3, 7, 1000] {
            let mut out = Trickle {
                written: Vec::new(),
                limit,
            };
            batch.write_to(&mut out).unwrap();
            assert_eq!(out.written, parts.concat(), "{limit} bytes per call");
        }
        let taken = batch.take();
        assert!(batch.is_empty() && batch.chunks().is_empty());
        assert_eq!(taken.chunks().len(), 3);
    }

    #[tokio::test]
    async fn a_writer_takes_what_queued_behind_its_next_batch_in_one_write_until_it_is_full() {
        let (queue, mut queued) = mpsc::channel(8);
        for part in [b"ab", b"cd", b"ef", b"gh"] {
            queue
                .send(Batch::from(Bytes::from_static(part)))
                .await
                .unwrap();
        }
        let full = |batch: &Batch| batch.len() >= 5;
        let first = next_gathered(&mut queued, full, Batch::append)
            .await
            .unwrap();
        assert_eq!(first.chunks().concat(), b"abcdef", "taken in until full");
        let second = next_gathered(&mut queued, full, Batch::append)
            .await
            .unwrap();
        assert_eq!(second.chunks().concat(), b"gh", "all that was queued");
        // Nothing queued: the next batch goes alone, as soon as it comes.
        queue
            .send(Batch::from(Bytes::from_static(b"ij")))
            .await
            .unwrap();
        let third = next_gathered(&mut queued, full, Batch::append)
            .await
            .unwrap();
        assert_eq!(third.chunks().concat(), b"ij");
        drop(queue);
        assert!(
            next_gathered(&mut queued, full, Batch::append)
                .await
                .is_none()
        );
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error_not_a_loop() {
        let mut batch = Batch::default();
        batch.push(Bytes::from_static(b"bytes"));
        let out = Trickle {
            written: Vec::new(),
            limit: 0,
        };
        let error = batch.write_to(out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }
}
