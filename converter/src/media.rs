//! ffprobe and ffmpeg as child processes. ffprobe decides whether a file can be converted at
//! all (so a bad upload fails with a reason instead of a retry loop); ffmpeg converts, reports
//! progress through `-progress`, and is killed when the job times out or is cancelled.

use crate::error::ConversionError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The most of ffmpeg's error output kept for the log.
const MAX_STDERR_BYTES: u64 = 8 * 1024;

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
    /// (0..=100) to `progress` once `duration` says how long the input is (it may learn that
    /// after ffmpeg started). Kills ffmpeg when `cancel` fires or the time limit passes.
    pub async fn transcode(
        &self,
        input: &Path,
        output: &Path,
        duration: watch::Receiver<Option<Duration>>,
        progress: &watch::Sender<u32>,
        cancel: &CancellationToken,
    ) -> Result<(), ConversionError> {
        let mut command = Command::new(&self.ffmpeg);
        command
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-nostats"])
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
        let report = report_progress(stdout, duration, progress);
        let errors = async {
            // Keep the start for the log, but read to the end: closing the pipe early would
            // kill ffmpeg with SIGPIPE (a damaged file can make it print an error per frame),
            // and a killed ffmpeg counts as transient, so the file would be retried.
            let mut stderr = stderr;
            let mut head = Vec::new();
            let _ = (&mut stderr)
                .take(MAX_STDERR_BYTES)
                .read_to_end(&mut head)
                .await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            String::from_utf8_lossy(&head).into_owned()
        };
        let run = async {
            let (status, (), errors) = tokio::join!(child.wait(), report, errors);
            (status, errors)
        };
        let (status, errors) = tokio::select! {
            finished = run => finished,
            () = cancel.cancelled() => return Err(ConversionError::Cancelled),
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
        match status.code() {
            // Killed by a signal (the OOM killer, an operator): not the file's fault.
            None => Err(ConversionError::transient(format!(
                "ffmpeg was stopped ({status})"
            ))),
            Some(_) => Err(ConversionError::Unconvertible(
                "the sound in your file could not be decoded; the file may be damaged".into(),
            )),
        }
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
        return Err(ConversionError::Unconvertible(format!(
            "your video is {} long; the longest we convert is {}",
            clock(duration),
            clock(max_duration)
        )));
    }
    Ok(Probe { duration })
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
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
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
            .transcode(
                &dir.path().join("in.mp4"),
                &dir.path().join("out.mp3"),
                watch::channel(Some(Duration::from_secs(1))).1,
                &progress,
                &CancellationToken::new(),
            )
            .await;
        assert!(
            matches!(&result, Err(ConversionError::Unconvertible(_))),
            "{result:?}"
        );
    }
}
