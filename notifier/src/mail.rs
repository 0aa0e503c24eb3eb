//! The e-mails themselves: what a user reads when a conversion succeeded or failed, in plain
//! text and HTML. Pure functions, so the wording is tested without a mail server.

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// Why an e-mail could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The recipient is not an e-mail address.
    #[error("`{0}` is not an e-mail address")]
    Recipient(String),
    /// lettre refused the message.
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// What the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// The audio file is ready.
    Ready {
        /// The file's id (the name is older than formats).
        mp3_id: String,
        /// Its format as users read it ("MP3", "Opus"…); empty means MP3 (an event from a
        /// converter older than formats).
        format: String,
    },
    /// The conversion failed.
    Failed {
        /// Why, in words the user can read.
        reason: String,
    },
}

/// The same e-mail as text and as HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body.
    pub html: String,
}

/// Writes the e-mail about `filename`. Download links start with `public_base_url`.
pub fn letter(news: &News, filename: &str, public_base_url: &str) -> Letter {
    let name = if filename.trim().is_empty() {
        "your video"
    } else {
        filename
    };
    match news {
        News::Ready { mp3_id, format } => {
            let format = if format.trim().is_empty() {
                "MP3"
            } else {
                format.as_str()
            };
            let url = format!(
                "{}/download/{mp3_id}",
                public_base_url.trim_end_matches('/')
            );
            let curl = format!("curl -fOJ -H \"Authorization: Bearer $TOKEN\" {url}");
            Letter {
                subject: format!("Your {format} of {name} is ready"),
                text: format!(
                    "Hello,\n\nthe {format} of {name} is ready.\n\nFile id: {mp3_id}\nDownload it \
                     (after logging in): {url}\n\nWith curl, using the access token from \
                     POST /login:\n\n    {curl}\n\n-- mp3converter\n"
                ),
                html: format!(
                    "<p>Hello,</p><p>the {} of <b>{}</b> is ready.</p>\
                     <p>File id: <code>{}</code><br>Download it (after logging in): \
                     <a href=\"{url_attr}\">{}</a></p>\
                     <p>With curl, using the access token from <code>POST /login</code>:</p>\
                     <pre>{}</pre><p>-- mp3converter</p>",
                    escape(format),
                    escape(name),
                    escape(mp3_id),
                    escape(&url),
                    escape(&curl),
                    url_attr = escape(&url),
                ),
            }
        }
        News::Failed { reason } => Letter {
            subject: format!("We could not convert {name}"),
            text: format!(
                "Hello,\n\nwe could not turn {name} into an MP3: {reason}\n\n-- mp3converter\n"
            ),
            html: format!(
                "<p>Hello,</p><p>we could not turn <b>{}</b> into an MP3: {}</p>\
                 <p>-- mp3converter</p>",
                escape(name),
                escape(reason)
            ),
        },
    }
}

/// Writes the e-mail telling an endpoint's owner that nothing is sent to `url` any more, and
/// how to turn it back on.
pub fn endpoint_disabled_letter(endpoint_id: &str, url: &str, reason: &str) -> Letter {
    let again = format!("mp3converter webhooks enable {endpoint_id}");
    Letter {
        subject: "Your webhook endpoint was disabled".into(),
        text: format!(
            "Hello,\n\nwe stopped sending webhooks to {url}: {reason}.\n\nOnce it answers \
             again, turn it back on with POST /webhooks/{endpoint_id}/enable, or:\n\n    \
             {again}\n\n-- mp3converter\n"
        ),
        html: format!(
            "<p>Hello,</p><p>we stopped sending webhooks to <code>{}</code>: {}.</p>\
             <p>Once it answers again, turn it back on with \
             <code>POST /webhooks/{}/enable</code>, or:</p><pre>{}</pre><p>-- mp3converter</p>",
            escape(url),
            escape(reason),
            escape(endpoint_id),
            escape(&again),
        ),
    }
}

/// The message to send: `letter` from `from` to `to`.
///
/// Its Message-ID is made of `about` (what it tells of, as `job.<id>`: letters-safe characters
/// only) and the sender's domain, so it is the same each time the same news is sent. A second
/// copy can only come of the one doubt SMTP leaves (the connection lost between the server
/// taking the message in and its answer, RFC 1047), and it is then the same message, which mail
/// systems that drop repeated Message-IDs show once.
pub fn message(
    letter: Letter,
    from: &Mailbox,
    to: &str,
    about: &str,
) -> Result<Message, ComposeError> {
    let to: Mailbox = to
        .parse()
        .map_err(|_| ComposeError::Recipient(to.to_owned()))?;
    Ok(Message::builder()
        .message_id(Some(format!("<{about}@{}>", from.email.domain())))
        .from(from.clone())
        .to(to)
        .subject(letter.subject)
        .multipart(MultiPart::alternative_plain_html(letter.text, letter.html))?)
}

/// Text made safe to place in HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_letter_names_the_format_it_was_made_in() {
        let news = News::Ready {
            mp3_id: "0123456789abcdef01234567".into(),
            format: "Opus".into(),
        };
        let letter = letter(&news, "talk.mp4", "https://mp3.example.com");
        assert_eq!(letter.subject, "Your Opus of talk.mp4 is ready");
        assert!(letter.text.contains("the Opus of talk.mp4 is ready"));
        assert!(letter.html.contains("the Opus of <b>talk.mp4</b>"));
    }

    #[test]
    fn a_ready_letter_gives_the_id_the_download_url_and_a_curl_example() {
        let news = News::Ready {
            mp3_id: "0123456789abcdef01234567".into(),
            format: String::new(),
        };
        let letter = letter(&news, "holiday.mp4", "https://mp3.example.com/");
        assert_eq!(letter.subject, "Your MP3 of holiday.mp4 is ready");
        let url = "https://mp3.example.com/download/0123456789abcdef01234567";
        assert!(letter.text.contains("File id: 0123456789abcdef01234567"));
        assert!(letter.text.contains(&format!(
            "curl -fOJ -H \"Authorization: Bearer $TOKEN\" {url}"
        )));
        assert!(letter.html.contains(&format!("<a href=\"{url}\">")));
    }

    #[test]
    fn a_failure_letter_gives_the_reason_and_the_html_escapes_what_users_chose() {
        let news = News::Failed {
            reason: "your video has no sound track".into(),
        };
        let letter = letter(&news, "<script>.mp4", "http://localhost:8080");
        assert_eq!(letter.subject, "We could not convert <script>.mp4");
        assert!(letter.text.contains("your video has no sound track"));
        assert!(letter.html.contains("&lt;script&gt;.mp4"));
        assert!(!letter.html.contains("<script>"));
    }

    #[test]
    fn a_message_needs_a_real_recipient() {
        let letter = letter(&News::Failed { reason: "x".into() }, "a.mp4", "http://h");
        let from: Mailbox = "mp3converter <no-reply@example.com>".parse().unwrap();
        assert!(message(letter.clone(), &from, "user@example.com", "job.1").is_ok());
        assert!(matches!(
            message(letter, &from, "not an address", "job.1"),
            Err(ComposeError::Recipient(_))
        ));
    }

    #[test]
    fn the_same_news_is_always_the_same_message_id_and_other_news_another() {
        let from: Mailbox = "mp3converter <no-reply@mail.example.com>".parse().unwrap();
        let id = |about: &str| {
            let letter = letter(&News::Failed { reason: "x".into() }, "a.mp4", "http://h");
            let message = message(letter, &from, "user@example.com", about).unwrap();
            let headers = message.headers().to_string();
            headers
                .lines()
                .find_map(|line| line.strip_prefix("Message-ID: "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(id("job.abc"), "<job.abc@mail.example.com>");
        assert_eq!(id("job.abc"), id("job.abc"));
        assert_ne!(id("job.abc"), id("job.abd"));
    }
}
