//! ffmpeg and ffprobe as child processes. One ffmpeg run per job both judges and converts the
//! file: the input's duration is read from ffmpeg's own description of it (on stderr, before
//! it converts anything), so a file that is too long is stopped at once. ffprobe, a second
//! process that costs as much CPU to start as the conversion of a short clip, runs only when
//! ffmpeg fails, to tell the user why (not a media file, no sound, too long) the same way as
//! ever. ffmpeg reports progress through `-progress` and is killed when the job times out or
//! is cancelled.

use crate::error::ConversionError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The most of ffmpeg's error output kept for the log.
const MAX_STDERR_BYTES: usize = 8 * 1024;
/// The longest line of ffmpeg's output kept whole (a file's metadata can make longer ones).
const MAX_LINE_BYTES: usize = 4 * 1024;

/// How the MP3 is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// LAME variable bitrate at this quality (0 best, 9 smallest).
    Vbr(u8),
    /// Constant bitrate in kbit/s.
    Cbr(u16),
}

/// The programs and limits of a conversion.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The ffmpeg program.
    pub ffmpeg: PathBuf,
    /// The ffprobe program.
    pub ffprobe: PathBuf,
    /// How the MP3 is encoded.
    pub encoding: Encoding,
    /// Longest input accepted.
    pub max_duration: Duration,
    /// Longest one conversion may run.
    pub timeout: Duration,
}

/// What ffprobe found out about an input that can be converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// The input's duration, when the container says.
    pub duration: Option<Duration>,
}

#[derive(Debug, Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Debug, Deserialize)]
struct ProbeStream {
    codec_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
}

impl Tools {
    /// Checks that `input` is a media file with sound, within the length limit.
    pub async fn probe(&self, input: &Path) -> Result<Probe, ConversionError> {
        let output = Command::new(&self.ffprobe)
            .args(["-v", "error", "-print_format", "json"])
            .args(["-show_entries", "format=duration:stream=codec_type"])
            .arg(input)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| {
                ConversionError::transient_because(
                    format!("cannot run {}", self.ffprobe.display()),
                    error,
                )
            })?;
        if !output.status.success() {
            tracing::info!(
                stderr = %String::from_utf8_lossy(&output.stderr).trim(),
                "ffprobe refused the input"
            );
            return Err(unreadable());
        }
        let probe: ProbeOutput =
            serde_json::from_slice(&output.stdout).map_err(|_| unreadable())?;
        judge(&probe, self.max_duration)
    }

    /// Converts the first audio stream of `input` to an MP3 at `output`, publishing progress
    /// (0..=100) to `progress`. A file that cannot be converted ends in
    /// [`ConversionError::Unconvertible`] with the reason the user is told; ffmpeg is killed
    /// when the input is longer than the limit, `cancel` fires or the time limit passes.
    pub async fn convert(
        &self,
        input: &Path,
        output: &Path,
        progress: &watch::Sender<u32>,
        cancel: &CancellationToken,
    ) -> Result<(), ConversionError> {
        let mut command = Command::new(&self.ffmpeg);
        command
            // `level` tags each line, so ffmpeg's description of the input (info) and its
            // complaints (warning and worse) can be told apart.
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "level+info",
                "-nostats",
            ])
            .args(["-progress", "pipe:1", "-y", "-i"])
            .arg(input)
            .args(["-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", "libmp3lame"]);
        match self.encoding {
            Encoding::Vbr(quality) => command.args(["-q:a", &quality.to_string()]),
            Encoding::Cbr(kbps) => command.args(["-b:a", &format!("{kbps}k")]),
        };
        // A file, not a pipe: the MP3 muxer seeks back to write the header that tells players
        // the length of a VBR stream.
        command.args(["-f", "mp3"]).arg(output);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                ConversionError::transient_because(
                    format!("cannot run {}", self.ffmpeg.display()),
                    error,
                )
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (duration_known, duration) = watch::channel(None);
        let too_long = CancellationToken::new();
        let report = report_progress(stdout, duration, progress);
        let errors = read_stderr(stderr, self.max_duration, &duration_known, &too_long);
        let run = async {
            let (status, (), errors) = tokio::join!(child.wait(), report, errors);
            (status, errors)
        };
        let (status, errors) = tokio::select! {
            finished = run => finished,
            () = cancel.cancelled() => return Err(ConversionError::Cancelled),
            () = too_long.cancelled() => {
                let duration = duration_known.borrow().unwrap_or_default();
                return Err(too_long_for(duration, self.max_duration));
            }
            () = tokio::time::sleep(self.timeout) => {
                return Err(ConversionError::transient(format!(
                    "the conversion took longer than {} s", self.timeout.as_secs()
                )));
            }
        };
        // (Leaving the select drops `run`, and with it the child: kill_on_drop kills ffmpeg.)
        let status = status?;
        if status.success() {
            return Ok(());
        }
        tracing::info!(?status, stderr = %errors.trim(), "ffmpeg failed");
        if status.code().is_none() {
            // Killed by a signal (the OOM killer, an operator): not the file's fault.
            return Err(ConversionError::transient(format!(
                "ffmpeg was stopped ({status})"
            )));
        }
        // ffprobe says what is wrong with the file; if it finds nothing, the sound is damaged.
        self.probe(input).await?;
        Err(ConversionError::Unconvertible(
            "the sound in your file could not be decoded; the file may be damaged".into(),
        ))
    }
}

/// Reads ffmpeg's stderr to the end, one line at a time. The input's duration goes to
/// `duration_known` (firing `too_long` past `max_duration`); warnings and errors are returned,
/// up to [`MAX_STDERR_BYTES`], for the log.
async fn read_stderr(
    stderr: impl AsyncRead + Unpin,
    max_duration: Duration,
    duration_known: &watch::Sender<Option<Duration>>,
    too_long: &CancellationToken,
) -> String {
    // Read to the end, not only the start: closing the pipe early would kill ffmpeg with
    // SIGPIPE (a damaged file can make it print an error per frame), and a killed ffmpeg
    // counts as transient, so the file would be retried.
    let mut lines = BoundedLines::new(BufReader::new(stderr));
    let mut kept = String::new();
    let mut duration_seen = false;
    while let Some(line) = lines.next_line().await {
        if let Some(info) = line.strip_prefix("[info] ") {
            if !duration_seen && let Some(duration) = input_duration(info) {
                duration_seen = true;
                duration_known.send_replace(duration);
                if duration.is_some_and(|duration| duration > max_duration) {
                    too_long.cancel();
                }
            }
        } else if kept.len() + line.len() < MAX_STDERR_BYTES {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    kept
}

/// The duration in ffmpeg's description of its input (`  Duration: 00:01:02.50, start: …`):
/// `Some(None)` when it says `N/A`, `None` when the line is another one.
fn input_duration(line: &str) -> Option<Option<Duration>> {
    let value = line.trim_start().strip_prefix("Duration: ")?;
    let value = value.split(',').next()?.trim();
    if value == "N/A" {
        return Some(None);
    }
    let mut parts = value.split(':');
    let (hours, minutes, seconds) = (parts.next()?, parts.next()?, parts.next()?);
    let seconds = hours.parse::<f64>().ok()? * 3600.0
        + minutes.parse::<f64>().ok()? * 60.0
        + seconds.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Some(Duration::from_secs_f64(seconds)))
}

/// Lines of a stream, each cut to [`MAX_LINE_BYTES`] (the rest of a longer one is skipped), so
/// what a file makes ffmpeg print cannot make the converter's memory grow. `\r` ends a line too.
struct BoundedLines<R> {
    reader: R,
    done: bool,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            done: false,
        }
    }

    async fn next_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        while !self.done {
            let buffer = match self.reader.fill_buf().await {
                Ok([]) | Err(_) => {
                    self.done = true;
                    break;
                }
                Ok(buffer) => buffer,
            };
            let end = buffer.iter().position(|byte| matches!(byte, b'\n' | b'\r'));
            let taken = end.unwrap_or(buffer.len());
            let room = MAX_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&buffer[..taken.min(room)]);
            self.reader.consume(end.map_or(taken, |end| end + 1));
            if end.is_some() {
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
        }
        (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned())
    }
}

fn unreadable() -> ConversionError {
    ConversionError::Unconvertible(
        "your file could not be read as a video or audio file; it may be damaged or in a \
         format we do not support"
            .into(),
    )
}

/// Whether what ffprobe saw can be converted.
fn judge(probe: &ProbeOutput, max_duration: Duration) -> Result<Probe, ConversionError> {
    let has_audio = probe
        .streams
        .iter()
        .any(|stream| stream.codec_type.as_deref() == Some("audio"));
    if !has_audio {
        return Err(ConversionError::Unconvertible(
            "your video has no sound track, so there is nothing to turn into an MP3".into(),
        ));
    }
    let duration = probe
        .format
        .as_ref()
        .and_then(|format| format.duration.as_deref())
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64);
    if let Some(duration) = duration
        && duration > max_duration
    {
        return Err(too_long_for(duration, max_duration));
    }
    Ok(Probe { duration })
}

fn too_long_for(duration: Duration, max_duration: Duration) -> ConversionError {
    ConversionError::Unconvertible(format!(
        "your video is {} long; the longest we convert is {}",
        clock(duration),
        clock(max_duration)
    ))
}

/// `1:02:03` or `2:03`.
fn clock(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{seconds:02}")
    } else {
        format!("{minutes}:{seconds:02}")
    }
}

/// Reads ffmpeg's `-progress` lines (`out_time_us=…`) and publishes whole percents, below 100
/// until the MP3 is stored.
async fn report_progress(
    stdout: tokio::process::ChildStdout,
    duration: watch::Receiver<Option<Duration>>,
    progress: &watch::Sender<u32>,
) {
    // Every line is read, known length or not, so ffmpeg never blocks on the pipe.
    let mut lines = BoundedLines::new(BufReader::new(stdout));
    while let Some(line) = lines.next_line().await {
        let Some(total) = duration.borrow().filter(|d| !d.is_zero()) else {
            continue;
        };
        if let Some(percent) = percent_from_progress_line(&line, total) {
            progress.send_if_modified(|current| {
                let changed = *current != percent;
                *current = percent;
                changed
            });
        }
    }
}

/// The percent done that one `-progress` line says, if it says one.
fn percent_from_progress_line(line: &str, total: Duration) -> Option<u32> {
    let micros = line
        .strip_prefix("out_time_us=")
        .or_else(|| line.strip_prefix("out_time_ms="))?
        .trim()
        .parse::<u64>()
        .ok()?;
    let percent = micros as f64 / total.as_micros() as f64 * 100.0;
    Some((percent.floor() as u32).min(99))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: &str) -> ProbeOutput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_file_with_sound_within_the_limit_is_accepted_with_its_duration() {
        let output = probe(
            r#"{"streams":[{"codec_type":"video"},{"codec_type":"audio"}],"format":{"duration":"12.500000"}}"#,
        );
        assert_eq!(
            judge(&output, Duration::from_secs(60)).unwrap(),
            Probe {
                duration: Some(Duration::from_millis(12_500))
            }
        );
    }

    #[test]
    fn a_file_without_sound_or_too_long_is_unconvertible_with_a_readable_reason() {
        let silent = probe(r#"{"streams":[{"codec_type":"video"}],"format":{"duration":"5"}}"#);
        let error = judge(&silent, Duration::from_secs(60)).unwrap_err();
        assert!(
            matches!(&error, ConversionError::Unconvertible(m) if m.contains("no sound track")),
            "{error:?}"
        );
        let long = probe(r#"{"streams":[{"codec_type":"audio"}],"format":{"duration":"3725"}}"#);
        let error = judge(&long, Duration::from_secs(3600)).unwrap_err();
        assert!(
            matches!(&error, ConversionError::Unconvertible(m) if m.contains("1:02:05 long") && m.contains("is 1:00:00")),
            "{error:?}"
        );
    }

    #[test]
    fn an_unknown_duration_is_no_reason_to_refuse() {
        let output = probe(r#"{"streams":[{"codec_type":"audio"}],"format":{"duration":"N/A"}}"#);
        assert_eq!(
            judge(&output, Duration::from_secs(1)).unwrap(),
            Probe { duration: None }
        );
    }

    #[test]
    fn progress_lines_become_percents_that_stop_short_of_100() {
        let total = Duration::from_secs(10);
        assert_eq!(
            percent_from_progress_line("out_time_us=2500000", total),
            Some(25)
        );
        assert_eq!(
            percent_from_progress_line("out_time_ms=9999000", total),
            Some(99)
        );
        assert_eq!(
            percent_from_progress_line("out_time_us=12000000", total),
            Some(99)
        );
        assert_eq!(percent_from_progress_line("progress=continue", total), None);
        assert_eq!(percent_from_progress_line("out_time_us=N/A", total), None);
    }

    /// A program standing in for ffmpeg only to test the pipe handling: it prints far more
    /// than a pipe holds to stderr, then fails as ffmpeg does on a damaged file. Had its stderr
    /// been closed early, SIGPIPE would kill it and the damaged file would look transient.
    #[tokio::test]
    async fn a_flood_of_error_output_is_read_to_the_end_so_a_damaged_file_stays_unconvertible() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("noisy-ffmpeg");
        std::fs::write(
            &program,
            "#!/bin/sh\ni=0\nwhile [ $i -lt 20000 ]; do echo \"error in frame $i\" >&2; i=$((i+1)); done\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools {
            ffmpeg: program,
            ffprobe: "ffprobe".into(),
            encoding: Encoding::Vbr(2),
            max_duration: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
        };
        let (progress, _seen) = watch::channel(0);
        let result = tools
            .convert(
                &dir.path().join("in.mp4"),
                &dir.path().join("out.mp3"),
                &progress,
                &CancellationToken::new(),
            )
            .await;
        assert!(
            matches!(&result, Err(ConversionError::Unconvertible(_))),
            "{result:?}"
        );
    }

    fn real_tools(max_duration: Duration) -> Tools {
        Tools {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            encoding: Encoding::Vbr(2),
            max_duration,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_duration_is_read_from_ffmpegs_description_of_its_input() {
        assert_eq!(
            input_duration("  Duration: 00:01:02.50, start: 0.000000, bitrate: 2711 kb/s"),
            Some(Some(Duration::from_millis(62_500)))
        );
        assert_eq!(
            input_duration("  Duration: 10:00:00.00, start: 0.0"),
            Some(Some(Duration::from_secs(36_000)))
        );
        assert_eq!(input_duration("  Duration: N/A, bitrate: N/A"), Some(None));
        assert_eq!(input_duration("  Stream #0:1: Audio: aac"), None);
        assert_eq!(input_duration("  Duration: soon, start: 0"), None);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_both_line_ends_count() {
        let long = "x".repeat(3 * MAX_LINE_BYTES);
        let text = format!("first\r{long}\nlast");
        let mut lines = BoundedLines::new(BufReader::with_capacity(64, text.as_bytes()));
        assert_eq!(lines.next_line().await.as_deref(), Some("first"));
        assert_eq!(
            lines.next_line().await.map(|l| l.len()),
            Some(MAX_LINE_BYTES)
        );
        assert_eq!(lines.next_line().await.as_deref(), Some("last"));
        assert_eq!(lines.next_line().await, None);
    }

    /// The real ffmpeg: the one run that converts also judges the file, with the reasons
    /// ffprobe gave when it judged every file.
    #[tokio::test]
    async fn one_ffmpeg_run_converts_and_refuses_what_cannot_be_converted_with_the_usual_reason() {
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("clip.mp4");
        test_support::generate_video(&clip, test_support::VideoSpec::small(5.0))
            .await
            .unwrap();
        let silent = dir.path().join("silent.mp4");
        test_support::generate_video(&silent, test_support::VideoSpec::small(2.0).without_audio())
            .await
            .unwrap();
        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, test_support::pseudo_random_bytes(64 * 1024, 7)).unwrap();
        let output = dir.path().join("out.mp3");
        let convert = |tools: Tools, input: std::path::PathBuf| {
            let output = output.clone();
            async move {
                let (progress, seen) = watch::channel(0);
                let result = tools
                    .convert(&input, &output, &progress, &CancellationToken::new())
                    .await;
                (result, *seen.borrow())
            }
        };

        let (converted, percent) = convert(real_tools(Duration::from_secs(60)), clip.clone()).await;
        converted.unwrap();
        assert!(std::fs::metadata(&output).unwrap().len() > 1000);
        assert!(percent > 0, "progress was reported: {percent}");

        let started = std::time::Instant::now();
        let (refused, _) = convert(real_tools(Duration::from_secs(2)), clip).await;
        assert!(
            matches!(&refused, Err(ConversionError::Unconvertible(m)) if m == "your video is 0:05 long; the longest we convert is 0:02"),
            "{refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        for (input, reason) in [(silent, "no sound track"), (junk, "could not be read")] {
            let (refused, _) = convert(real_tools(Duration::from_secs(60)), input).await;
            assert!(
                matches!(&refused, Err(ConversionError::Unconvertible(m)) if m.contains(reason)),
                "{reason}: {refused:?}"
            );
        }
    }
}
