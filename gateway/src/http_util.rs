//! Small pieces of HTTP the download route needs, kept pure so they are tested alone: the
//! `Range` header and a `Content-Disposition` that is safe whatever the file was called.

use axum::http::HeaderValue;
/// What a `Range` header asks of a file of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole file (no header, or one we may ignore: malformed or several ranges).
    Whole,
    /// The bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A well-formed range that lies outside the file.
    Unsatisfiable,
}

/// Interprets a `Range` header for a file of `size` bytes (RFC 9110 §14.2): one
/// `bytes=first-last`, `bytes=first-` or `bytes=-suffix` range. A header we do not understand,
/// or one with several ranges, may be ignored: the whole file is sent.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Partial {
                start: size.saturating_sub(suffix),
                end: size - 1,
            },
            None => RangeRequest::Whole,
        },
        (first, "") => match number(first) {
            Some(start) if start < size => RangeRequest::Partial {
                start,
                end: size - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Whole,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => RangeRequest::Whole,
            (Some(start), Some(_)) if start >= size => RangeRequest::Unsatisfiable,
            (Some(start), Some(end)) => RangeRequest::Partial {
                start,
                end: end.min(size - 1),
            },
            _ => RangeRequest::Whole,
        },
    }
}

/// Whether an `If-None-Match` header matches the entity tag `etag` (weak comparison).
pub fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// `attachment` with an ASCII `filename` anyone can parse and a `filename*` keeping the
/// original (UTF-8) name, both stripped of path separators, quotes and control characters.
pub fn attachment_disposition(name: &str, extension: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let cleaned: String = stem
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\' | '"'))
        .collect();
    let cleaned = cleaned.trim().trim_matches('.');
    let cleaned = if cleaned.is_empty() { "audio" } else { cleaned };
    let ascii: String = cleaned
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '(' | ')') {
                c
            } else {
                '_'
            }
        })
        .take(150)
        .collect();
    let unicode: String = cleaned.chars().take(150).collect();
    let encoded: String = format!("{unicode}.{extension}")
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}.{extension}\"; filename*=UTF-8''{encoded}")
}

/// The credentials of an `Authorization` value in `scheme` (`Bearer`, `Basic`; any case), if the
/// value is that scheme, non-empty, and at most `max_len` bytes.
pub fn authorization<'a>(value: &'a HeaderValue, scheme: &str, max_len: usize) -> Option<&'a str> {
    let (given, credentials) = value.to_str().ok()?.split_once(' ')?;
    let credentials = credentials.trim();
    (given.eq_ignore_ascii_case(scheme) && !credentials.is_empty() && credentials.len() <= max_len)
        .then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_understood() {
        let size = 1000;
        let partial = |start, end| RangeRequest::Partial { start, end };
        assert_eq!(parse_range(None, size), RangeRequest::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), size), partial(0, 0));
        assert_eq!(parse_range(Some("bytes=10-19"), size), partial(10, 19));
        assert_eq!(parse_range(Some("bytes=990-"), size), partial(990, 999));
        assert_eq!(parse_range(Some("bytes=-10"), size), partial(990, 999));
        assert_eq!(parse_range(Some("bytes=-5000"), size), partial(0, 999));
        assert_eq!(parse_range(Some("bytes=900-5000"), size), partial(900, 999));
    }

    #[test]
    fn ranges_outside_the_file_are_unsatisfiable() {
        for (range, size) in [
            ("bytes=1000-", 1000),
            ("bytes=2000-3000", 1000),
            ("bytes=-0", 1000),
            ("bytes=0-", 0),
        ] {
            assert_eq!(
                parse_range(Some(range), size),
                RangeRequest::Unsatisfiable,
                "{range} of {size}"
            );
        }
    }

    #[test]
    fn malformed_or_multiple_ranges_are_ignored() {
        for header in [
            "bytes=0-1,5-6",
            "items=0-10",
            "bytes=abc",
            "bytes=5-1",
            "bytes=-",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(
                parse_range(Some(header), 1000),
                RangeRequest::Whole,
                "{header}"
            );
        }
    }

    #[test]
    fn etags_match_exactly_weakly_or_by_star() {
        let etag = "\"abc\"";
        assert!(etag_matches(Some("\"abc\""), etag));
        assert!(etag_matches(Some("\"x\", W/\"abc\""), etag));
        assert!(etag_matches(Some("*"), etag));
        assert!(!etag_matches(Some("\"abd\""), etag));
        assert!(!etag_matches(None, etag));
    }

    #[test]
    fn dispositions_are_safe_whatever_the_name() {
        assert_eq!(
            attachment_disposition("holiday clip.mp4", "mp3"),
            "attachment; filename=\"holiday clip.mp3\"; filename*=UTF-8''holiday%20clip.mp3"
        );
        let hostile = attachment_disposition("../../etc/pass\"wd\r\n.mov", "mp3");
        assert!(!hostile.contains(['/', '\\', '\r', '\n']), "{hostile}");
        assert!(
            hostile.starts_with("attachment; filename=\"passwd.mp3\""),
            "{hostile}"
        );
        let unicode = attachment_disposition("fête.mp4", "mp3");
        assert!(unicode.contains("filename=\"f_te.mp3\""), "{unicode}");
        assert!(
            unicode.contains("filename*=UTF-8''f%C3%AAte.mp3"),
            "{unicode}"
        );
        assert!(attachment_disposition("", "mp3").contains("filename=\"audio.mp3\""));
        assert!(attachment_disposition("...", "mp3").contains("filename=\"audio.mp3\""));
    }
}
