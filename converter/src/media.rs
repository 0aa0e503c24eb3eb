//! ffmpeg and ffprobe as child processes: the passes of one conversion (see [`crate::recipe`])
//! run here. The pass that first reads the input also judges it: the input's duration is read
//! from ffmpeg's own description of it (on stderr, before it converts anything), so a file
//! that is too long, or shorter than where its trim starts, is stopped at once. ffprobe, a
//! process that costs as much CPU to start as the conversion of a short clip, runs only when
//! ffmpeg fails, to tell the user why (not a media file, no sound, too long) the same way as
//! ever. ffmpeg reports progress through `-progress` and is killed when the job times out or
//! is cancelled.

use crate::cover;
use crate::description::{DescriptionReader, InputFacts, Line};
use crate::error::ConversionError;
use crate::id3_tags;
use crate::loudness;
use crate::recipe::{self, Trim};
use audio_options::{AudioOptions, Cover, Format};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use std::ops::Range;
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

    /// Converts `conversion.input` as its options say, publishing progress (0..=99) to
    /// `progress`; returns the finished file, in `conversion.workspace`. A file that cannot
    /// be converted ends in [`ConversionError::Unconvertible`] with the reason the user is
    /// told; ffmpeg is killed when the input is longer than the limit, when the trim starts
    /// past its end, when `cancel` fires or when the time limit passes.
    pub async fn convert(
        &self,
        conversion: &Conversion<'_>,
        progress: &watch::Sender<u32>,
        cancel: &CancellationToken,
    ) -> Result<PathBuf, ConversionError> {
        let Conversion {
            input,
            workspace,
            options,
            original_filename,
        } = *conversion;
        let trim = Trim::of(options);
        let format = options.format;
        let (measured, source_rate, encode_share) = if options.normalize.is_some() {
            let mut command = self.ffmpeg_reading(input, &trim);
            command.args(recipe::measure_args(options));
            let report = self
                .run(command, input, &trim, Some((progress, 0..50)), cancel)
                .await?;
            let measured = loudness::measurement(report.loudnorm.as_deref());
            (measured, report.facts.sample_rate, 50..100)
        } else {
            (None, None, 0..100)
        };

        let encoded = workspace.join(format!("encoded.{}", format.extension()));
        let mut command = self.ffmpeg_reading(input, &trim);
        command
            .args(recipe::encode_args(
                options,
                self.encoding,
                measured,
                source_rate,
            ))
            // A file, not a pipe: the MP3 muxer seeks back to write the header that tells
            // players the length of a VBR stream.
            .arg(&encoded);
        let report = self
            .run(
                command,
                input,
                &trim,
                Some((progress, encode_share)),
                cancel,
            )
            .await?;
        let facts = report.facts;

        let cover = match options.cover {
            Cover::Auto => self.cover(input, &facts, workspace, cancel).await,
            Cover::None => None,
        };
        if cancel.is_cancelled() {
            return Err(ConversionError::Cancelled);
        }
        if format == Format::Mp3 {
            // ID3 tags are written here, in this process: one ffmpeg start fewer per job.
            let tags = recipe::chosen_tags(&facts, options, original_filename);
            let picture = cover.map(|cover| (cover.jpeg, cover.description));
            let (path, version) = (encoded.clone(), options.id3v2);
            tokio::task::spawn_blocking(move || id3_tags::write(&path, &tags, picture, version))
                .await
                .map_err(std::io::Error::other)?
                .map_err(|error| {
                    ConversionError::transient_because("writing the ID3 tag", error)
                })?;
            return Ok(encoded);
        }
        let output = workspace.join(format!("output.{}", format.extension()));
        let finishing = Finishing {
            encoded: &encoded,
            facts: &facts,
            options,
            original_filename,
            cover: cover.as_ref(),
            output: &output,
        };
        self.finish(&finishing, cancel).await?;
        Ok(output)
    }

    /// An ffmpeg command that reports progress on stdout and describes its input at info
    /// level, each line tagged with its level so the description (info) and complaints
    /// (warning and worse) can be told apart.
    fn ffmpeg(&self) -> Command {
        let mut command = Command::new(&self.ffmpeg);
        command
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "level+info",
                "-nostats",
            ])
            .args(["-progress", "pipe:1", "-y"]);
        command
    }

    /// [`Tools::ffmpeg`] reading the trimmed part of `input`.
    fn ffmpeg_reading(&self, input: &Path, trim: &Trim) -> Command {
        let mut command = self.ffmpeg();
        command.args(trim.input_args()).arg("-i").arg(input);
        command
    }

    /// Takes the cover: a frame of the video, or the source's own picture. No cover is no
    /// failure: the sound is what the user asked for, so a failed extraction is logged only.
    async fn cover(
        &self,
        input: &Path,
        facts: &InputFacts,
        workspace: &Path,
        cancel: &CancellationToken,
    ) -> Option<CoverPicture> {
        let path = workspace.join("cover.jpg");
        // From a tenth of the way in; a video dark from there on is searched from its start.
        let first = cover::seek_point(facts.duration.flatten());
        let seeks = if first.is_zero() {
            vec![first]
        } else {
            vec![first, Duration::ZERO]
        };
        for seek in seeks {
            let mut command = self.ffmpeg();
            command.args(cover::extraction_args(facts.picture, seek, input, &path)?);
            let report = match self
                .run(command, input, &Trim::default(), None, cancel)
                .await
            {
                Ok(report) => report,
                Err(error) => {
                    tracing::warn!(error = %error.report(), "no cover: taking the frame failed");
                    return None;
                }
            };
            let jpeg = match tokio::fs::read(&path).await {
                Ok(jpeg) if !jpeg.is_empty() => jpeg,
                _ => continue,
            };
            let at = report
                .frame_time
                .map(|time| seek + Duration::from_secs_f64(time.max(0.0)));
            return Some(CoverPicture {
                description: cover::description(facts.picture, at),
                jpeg,
                path,
            });
        }
        tracing::info!("no cover: the video has no frame that is not black or blank");
        None
    }

    /// Copies the encoded stream into the output with the tags and the picture (every format
    /// but MP3, whose tag is written in this process).
    async fn finish(
        &self,
        finishing: &Finishing<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), ConversionError> {
        let Finishing {
            encoded,
            facts,
            options,
            original_filename,
            cover,
            output,
        } = *finishing;
        let tags = recipe::chosen_tags(facts, options, original_filename);
        let picture_comment = match (options.format, cover) {
            (Format::Opus, Some(cover)) => {
                Some(BASE64.encode(cover::flac_picture_block(&cover.jpeg, &cover.description)))
            }
            _ => None,
        };
        let metadata = encoded.with_file_name("tags.txt");
        tokio::fs::write(
            &metadata,
            recipe::metadata_file(&tags, picture_comment.as_deref()),
        )
        .await?;
        let mut command = self.ffmpeg();
        command
            .arg("-i")
            .arg(encoded)
            .args(["-f", "ffmetadata", "-i"])
            .arg(&metadata);
        let stream_picture = cover.filter(|_| options.format != Format::Opus);
        if let Some(cover) = stream_picture {
            command.arg("-i").arg(&cover.path);
        }
        command
            .args(recipe::finish_args(
                options,
                stream_picture.map(|cover| cover.description.as_str()),
            ))
            .arg(output);
        match self
            .run(command, encoded, &Trim::default(), None, cancel)
            .await
        {
            Ok(_) => Ok(()),
            // Our own file failed to copy: not the user's file's fault.
            Err(ConversionError::Unconvertible(reason)) => Err(ConversionError::transient(
                format!("writing the tags failed: {reason}"),
            )),
            Err(other) => Err(other),
        }
    }

    /// Runs one ffmpeg pass to its end: its description of `input` read (the duration judged
    /// against the limit and the trim), its progress published to the given share of
    /// `progress`, its complaints kept for the log. A failure is explained with ffprobe.
    async fn run(
        &self,
        mut command: Command,
        input: &Path,
        trim: &Trim,
        progress: Option<(&watch::Sender<u32>, Range<u32>)>,
        cancel: &CancellationToken,
    ) -> Result<Report, ConversionError> {
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
        let refused = CancellationToken::new();
        let judge = |duration| self.judge_duration(duration, trim).is_some();
        let report = report_progress(stdout, duration, *trim, progress);
        let errors = read_stderr(stderr, &judge, &duration_known, &refused);
        let run = async {
            let (status, (), read) = tokio::join!(child.wait(), report, errors);
            (status, read)
        };
        // (Leaving the select early drops `run`, and with it the child: kill_on_drop kills
        // ffmpeg.)
        let (status, (reader, complaints)) = tokio::select! {
            finished = run => finished,
            () = cancel.cancelled() => return Err(ConversionError::Cancelled),
            () = refused.cancelled() => {
                let duration = *duration_known.borrow();
                return Err(self
                    .judge_duration(duration, trim)
                    .unwrap_or_else(|| ConversionError::transient("the input was refused")));
            }
            () = tokio::time::sleep(self.timeout) => {
                return Err(ConversionError::transient(format!(
                    "the conversion took longer than {} s", self.timeout.as_secs()
                )));
            }
        };
        let status = status?;
        let (facts, loudnorm, frame_time) = reader.finish();
        if status.success() {
            return Ok(Report {
                facts,
                loudnorm,
                frame_time,
            });
        }
        tracing::info!(?status, stderr = %complaints.trim(), "ffmpeg failed");
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

    /// Why a source of `duration` cannot be converted as asked, if it cannot.
    fn judge_duration(&self, duration: Option<Duration>, trim: &Trim) -> Option<ConversionError> {
        let duration = duration?;
        if duration > self.max_duration {
            return Some(too_long_for(duration, self.max_duration));
        }
        match trim.start {
            Some(start) if start >= duration => Some(ConversionError::Unconvertible(format!(
                "`start` ({}) is at or past the end of your video, which is {} long",
                cover::clock_ms(start),
                cover::clock_ms(duration)
            ))),
            _ => None,
        }
    }
}

/// What a job's conversion needs.
#[derive(Debug, Clone, Copy)]
pub struct Conversion<'a> {
    /// The fetched source.
    pub input: &'a Path,
    /// The job's temporary directory, where the passes write.
    pub workspace: &'a Path,
    /// What to make.
    pub options: &'a AudioOptions,
    /// The uploaded file's name (the title when the source has none).
    pub original_filename: &'a str,
}

/// What the finish pass puts together.
#[derive(Debug, Clone, Copy)]
struct Finishing<'a> {
    encoded: &'a Path,
    facts: &'a InputFacts,
    options: &'a AudioOptions,
    original_filename: &'a str,
    cover: Option<&'a CoverPicture>,
    output: &'a Path,
}

/// What one pass learnt.
#[derive(Debug)]
struct Report {
    facts: InputFacts,
    loudnorm: Option<String>,
    frame_time: Option<f64>,
}

/// A cover taken for the file.
#[derive(Debug)]
struct CoverPicture {
    path: PathBuf,
    jpeg: Vec<u8>,
    description: String,
}

/// Reads ffmpeg's stderr to the end, one line at a time, into a [`DescriptionReader`]. The
/// input's duration goes to `duration_known`, and when `refuses` says the file cannot be
/// converted so, `refused` fires; warnings and errors are returned, up to
/// [`MAX_STDERR_BYTES`], for the log.
async fn read_stderr(
    stderr: impl AsyncRead + Unpin,
    refuses: &(dyn Fn(Option<Duration>) -> bool + Sync),
    duration_known: &watch::Sender<Option<Duration>>,
    refused: &CancellationToken,
) -> (DescriptionReader, String) {
    // Read to the end, not only the start: closing the pipe early would kill ffmpeg with
    // SIGPIPE (a damaged file can make it print an error per frame), and a killed ffmpeg
    // counts as transient, so the file would be retried.
    let mut lines = BoundedLines::new(BufReader::new(stderr));
    let mut reader = DescriptionReader::default();
    let mut kept = String::new();
    let mut duration_seen = false;
    while let Some(line) = lines.next_line().await {
        if reader.read(&line) == Line::Complaint && kept.len() + line.len() < MAX_STDERR_BYTES {
            kept.push_str(&line);
            kept.push('\n');
        }
        if !duration_seen && let Some(duration) = reader.facts().duration {
            duration_seen = true;
            duration_known.send_replace(duration);
            if refuses(duration) {
                refused.cancel();
            }
        }
    }
    (reader, kept)
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

/// Reads ffmpeg's `-progress` lines (`out_time_us=…`) and publishes whole percents of the
/// kept part of the input, mapped onto `share` of the job (below 100 until the file is stored).
async fn report_progress(
    stdout: tokio::process::ChildStdout,
    duration: watch::Receiver<Option<Duration>>,
    trim: Trim,
    progress: Option<(&watch::Sender<u32>, Range<u32>)>,
) {
    // Every line is read, known length or not, so ffmpeg never blocks on the pipe.
    let mut lines = BoundedLines::new(BufReader::new(stdout));
    while let Some(line) = lines.next_line().await {
        let Some((progress, share)) = &progress else {
            continue;
        };
        let Some(total) = duration
            .borrow()
            .map(|duration| trim.kept(duration))
            .filter(|d| !d.is_zero())
        else {
            continue;
        };
        if let Some(percent) = percent_from_progress_line(&line, total) {
            let percent = (share.start + percent * (share.end - share.start) / 100).min(99);
            progress.send_if_modified(|current| {
                let changed = *current < percent;
                if changed {
                    *current = percent;
                }
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
        let input = dir.path().join("in.mp4");
        let conversion = Conversion {
            input: &input,
            workspace: dir.path(),
            options: &AudioOptions::default(),
            original_filename: "in.mp4",
        };
        let result = tools
            .convert(&conversion, &progress, &CancellationToken::new())
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
        let workspace = dir.path().to_owned();
        let convert = |tools: Tools, input: std::path::PathBuf| {
            let workspace = workspace.clone();
            async move {
                let (progress, seen) = watch::channel(0);
                let conversion = Conversion {
                    input: &input,
                    workspace: &workspace,
                    options: &AudioOptions::default(),
                    original_filename: "clip.mp4",
                };
                let result = tools
                    .convert(&conversion, &progress, &CancellationToken::new())
                    .await;
                (result, *seen.borrow())
            }
        };

        let (converted, percent) = convert(real_tools(Duration::from_secs(60)), clip.clone()).await;
        let output = converted.unwrap();
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
