//! A bound on multipart part headers. The multipart parser buffers a part's headers until their
//! blank line, limited only by the whole body's size limit (gigabytes for uploads), so a body
//! whose "headers" never end would be held in memory whole. This guard sits between the
//! connection and the parser: it follows the body through boundaries and header blocks as the
//! bytes pass, without copying them, and fails the body as soon as one header block exceeds
//! [`MAX_PART_HEADER_BYTES`].

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use memchr::memmem;

/// The most header bytes one part may carry (a real one holds two short lines).
pub const MAX_PART_HEADER_BYTES: usize = 16 * 1024;

const HEADER_END: &[u8] = b"\r\n\r\n";

/// Where the scanner is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In a part's data (or the preamble): looking for the next delimiter.
    Data,
    /// In a part's headers, this many bytes in: looking for the blank line.
    Headers(usize),
}

/// Follows one multipart body chunk by chunk.
#[derive(Debug)]
pub struct PartHeaderGuard {
    delimiter: Vec<u8>,
    place: Place,
    /// The last bytes of the previous chunk, for a delimiter or blank line split across two.
    tail: Vec<u8>,
}

impl PartHeaderGuard {
    /// A guard for a body with this boundary.
    pub fn new(boundary: &str) -> Self {
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            place: Place::Data,
            // The first delimiter opens the body without the CRLF before it.
            tail: b"\r\n".to_vec(),
        }
    }

    /// Follows `chunk`; an error when a part's headers run past the limit.
    pub fn inspect(&mut self, chunk: &[u8]) -> Result<(), String> {
        let mut from = 0;
        loop {
            let needle = match self.place {
                Place::Data => self.delimiter.as_slice(),
                Place::Headers(_) => HEADER_END,
            };
            let found = find(&self.tail, chunk, from, needle);
            match (self.place, found) {
                (Place::Data, Some(end)) => {
                    self.place = Place::Headers(0);
                    from = end;
                }
                (Place::Data, None) => break,
                (Place::Headers(before), Some(end)) => {
                    check(before + end.saturating_sub(from))?;
                    self.place = Place::Data;
                    from = end;
                }
                (Place::Headers(before), None) => {
                    let so_far = before + chunk.len() - from;
                    check(so_far)?;
                    self.place = Place::Headers(so_far);
                    break;
                }
            }
        }
        // Keep what a match split across this chunk and the next may need, but never bytes a
        // match already used.
        // Only those last few bytes are copied, never the chunk: this runs on every chunk of
        // a gigabyte upload.
        let keep = self.delimiter.len().max(HEADER_END.len()) - 1;
        let unused = &chunk[from..];
        if from == 0 && unused.len() < keep {
            self.tail.extend_from_slice(unused);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        } else {
            self.tail.clear();
            self.tail
                .extend_from_slice(&unused[unused.len().saturating_sub(keep)..]);
        }
        Ok(())
    }
}

fn check(header_bytes: usize) -> Result<(), String> {
    if header_bytes > MAX_PART_HEADER_BYTES {
        Err(format!(
            "a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes"
        ))
    } else {
        Ok(())
    }
}

/// Where the first `needle` that ends in `chunk` at or after `from` ends (an index into
/// `chunk`); with `from` 0, one that starts in `tail` counts too.
fn find(tail: &[u8], chunk: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from == 0 && !tail.is_empty() {
        let head = &chunk[..chunk.len().min(needle.len() - 1)];
        let joined: Vec<u8> = tail.iter().chain(head).copied().collect();
        if let Some(start) = memmem::find(&joined, needle)
            && start + needle.len() > tail.len()
            && start < tail.len()
        {
            return Some(start + needle.len() - tail.len());
        }
    }
    memmem::find(&chunk[from..], needle).map(|start| from + start + needle.len())
}

/// Middleware for the upload route: passes a multipart body through a [`PartHeaderGuard`].
pub async fn guard_part_headers(request: Request, next: Next) -> Response {
    let boundary = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok());
    let Some(boundary) = boundary else {
        // Not multipart: the handler answers that.
        return next.run(request).await;
    };
    let request = request.map(|body| {
        let mut guard = PartHeaderGuard::new(&boundary);
        let guarded = body.into_data_stream().map(move |chunk| {
            let chunk = chunk.map_err(axum::Error::new)?;
            guard.inspect(&chunk).map_err(axum::Error::new)?;
            Ok::<_, axum::Error>(chunk)
        });
        Body::from_stream(guarded)
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "xyzzy";

    fn body(header_filler: usize, data: &[u8]) -> Vec<u8> {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\nX-Filler: {}\r\n\r\n",
            "h".repeat(header_filler)
        )
        .into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    fn run(body: &[u8], chunk_size: usize) -> Result<(), String> {
        let mut guard = PartHeaderGuard::new(BOUNDARY);
        body.chunks(chunk_size)
            .try_for_each(|chunk| guard.inspect(chunk))
    }

    #[test]
    fn an_ordinary_body_passes_however_it_is_split() {
        let data: Vec<u8> = (0..50_000u32).map(|n| (n % 251) as u8).collect();
        let body = body(100, &data);
        for chunk_size in [1, 2, 3, 7, 64, 1000, body.len()] {
            run(&body, chunk_size).unwrap();
        }
    }

    #[test]
    fn large_data_is_not_mistaken_for_headers() {
        let body = body(10, &vec![b'x'; 5 * MAX_PART_HEADER_BYTES]);
        run(&body, 4096).unwrap();
    }

    #[test]
    fn headers_past_the_limit_fail_however_it_is_split() {
        let body = body(MAX_PART_HEADER_BYTES + 1, b"data");
        for chunk_size in [1, 5, 4096, body.len()] {
            let error = run(&body, chunk_size).unwrap_err();
            assert!(error.contains("headers are longer"), "{error}");
        }
    }

    #[test]
    fn headers_that_never_end_fail_before_the_body_does() {
        let mut guard = PartHeaderGuard::new(BOUNDARY);
        guard
            .inspect(format!("--{BOUNDARY}\r\nX: ").as_bytes())
            .unwrap();
        let endless = vec![b'a'; 1024];
        let failed_after = (1..100).find(|_| guard.inspect(&endless).is_err());
        // Five header bytes came with the boundary ("\r\nX: "), so the 16th KiB crosses 16 KiB.
        assert_eq!(failed_after, Some(MAX_PART_HEADER_BYTES / 1024));
    }

    #[test]
    fn a_second_part_with_huge_headers_fails_too() {
        let mut body = body(10, b"first file");
        body.truncate(body.len() - format!("--{BOUNDARY}--\r\n").len());
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nX-Filler: {}\r\n\r\nmore\r\n--{BOUNDARY}--\r\n",
                "h".repeat(2 * MAX_PART_HEADER_BYTES)
            )
            .as_bytes(),
        );
        assert!(run(&body, 3000).is_err());
    }
}
