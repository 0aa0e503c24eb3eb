//! Writing an error for the log with everything that caused it. Our error types keep their
//! causes as `source`s, and `Display` shows only the top: a log line needs the whole chain
//! ("publishing to the video queue: broker error: connection reset"), a client never sees it.

use std::error::Error;

/// `error` and each of its sources, joined with `: `.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("publishing to the video queue")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_written_once() {
        let error = Outer(std::io::Error::other("connection reset"));
        assert_eq!(
            chain(&error),
            "publishing to the video queue: connection reset"
        );
    }
}
