//! The request id of the HTTP request being served, carried to auth and storage in gRPC
//! metadata (`x-request-id`, the header the gateway answers with), so every service's log lines
//! for one request can be found by one id.
//!
//! The gateway runs each request inside [`scope`]; the clients (`clients` crate) put it on every
//! call they make with [`attach`], and the gRPC servers ([`crate::grpc`]) put what they received
//! in their request span with [`of`].
//! A task-local rather than a parameter: every call of a request gets it without each handler
//! threading it through, and a call made outside any request (a worker's) simply has none.

use std::future::Future;

/// The metadata key (and HTTP header) that carries the id.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The longest id passed on: an id is for finding log lines, and a client-chosen one must not
/// make every internal call carry a large header.
pub const MAX_LEN: usize = 128;

/// Runs `work` with `id` as the current request id (none when `id` is empty, or longer than
/// [`MAX_LEN`], or not printable ASCII).
pub async fn scope<F: Future>(id: String, work: F) -> F::Output {
    let usable = !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if usable {
        REQUEST_ID.scope(id, work).await
    } else {
        work.await
    }
}

/// The current request id, if the caller runs inside [`scope`].
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Puts the current request id (if any) on a gRPC request.
pub fn attach<T>(request: &mut tonic::Request<T>) {
    if let Some(id) = current()
        && let Ok(value) = id.parse()
    {
        request.metadata_mut().insert(HEADER, value);
    }
}

/// The request id a server received, for its log span.
pub fn of<T>(request: &http::Request<T>) -> Option<&str> {
    request.headers().get(HEADER)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_inside_a_scope_carry_its_id_and_calls_outside_carry_none() {
        let mut outside = tonic::Request::new(());
        attach(&mut outside);
        assert!(outside.metadata().get(HEADER).is_none());

        let inside = scope("req-42".into(), async {
            let mut request = tonic::Request::new(());
            attach(&mut request);
            request
        })
        .await;
        assert_eq!(inside.metadata().get(HEADER).unwrap(), "req-42");

        for unusable in [String::new(), "x".repeat(MAX_LEN + 1), "two words".into()] {
            assert_eq!(
                scope(unusable.clone(), async { current() }).await,
                None,
                "{unusable:?}"
            );
        }
    }
}
