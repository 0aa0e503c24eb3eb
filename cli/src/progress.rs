//! Progress bars on stderr: bytes with rate and ETA for transfers, a percentage for a
//! conversion. Hidden with `--json` (stdout is for the result) and when stderr is not a
//! terminal (indicatif draws nothing then), so scripts and logs stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting bytes, its length set once known.
pub fn transfer(message: &'static str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:>11} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::new(0).with_style(style).with_message(message)
}

/// A bar for a job's conversion, 0 to 100 percent, its status as the message.
pub fn conversion(visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg:>11} [{bar:30.green/blue}] {pos:>3}% {elapsed}")
        .expect("the template is valid")
        .progress_chars("=> ");
    ProgressBar::new(100)
        .with_style(style)
        .with_message("queued")
}
