//! Test media made on the spot with the real ffmpeg (lavfi sources), so no binary fixtures are
//! committed and every size or duration a test needs is one call away.

use anyhow::{Context, bail};
use std::path::Path;
use tokio::process::Command;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct VideoSpec {
    /// Length in seconds.
    pub seconds: f32,
    /// Whether the file has an audio track (a sine tone).
    pub audio: bool,
    /// Frame width and height.
    pub size: (u32, u32),
    /// Frames per second; low values make generation fast.
    pub fps: u32,
}

impl VideoSpec {
    /// A small MP4 with audio: fast to make, enough for a conversion.
    pub fn small(seconds: f32) -> Self {
        Self {
            seconds,
            audio: true,
            size: (160, 120),
            fps: 5,
        }
    }

    /// Twenty minutes of sound behind a tiny picture: quick to make, yet its conversion runs
    /// for seconds, so a test can be sure to interrupt one in progress.
    pub fn long_conversion() -> Self {
        Self {
            seconds: 1200.0,
            size: (64, 48),
            fps: 1,
            ..Self::small(1.0)
        }
    }

    /// The same video without an audio track.
    pub fn without_audio(self) -> Self {
        Self {
            audio: false,
            ..self
        }
    }
}

/// The bytes of an MP4 video described by `spec` (small ones: it is read into memory).
pub async fn mp4_bytes(spec: VideoSpec) -> Vec<u8> {
    let dir = crate::temp_dir();
    let path = dir.path().join("clip.mp4");
    generate_video(&path, spec)
        .await
        .expect("ffmpeg generates the video");
    tokio::fs::read(&path)
        .await
        .expect("the generated video is readable")
}

/// Writes an H.264/AAC video described by `spec` to `path` (the container follows the
/// extension: `.mp4`, `.mkv`, `.webm`, ...).
pub async fn generate_video(path: &Path, spec: VideoSpec) -> anyhow::Result<()> {
    let (width, height) = spec.size;
    let seconds = spec.seconds.to_string();
    let mut command = Command::new("ffmpeg");
    command.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ]);
    command.arg(format!("testsrc2=size={width}x{height}:rate={}", spec.fps));
    if spec.audio {
        command.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    }
    command.args(["-t", &seconds, "-pix_fmt", "yuv420p"]);
    if spec.audio {
        command.args(["-shortest"]);
    }
    command.arg(path);
    let output = command
        .output()
        .await
        .context("running ffmpeg (is it installed? scripts/test installs it)")?;
    if !output.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// The duration of a media file in seconds, as ffprobe reads it.
pub async fn ffprobe_duration_seconds(path: &Path) -> anyhow::Result<f64> {
    let text = ffprobe_entries("format=duration", path).await?;
    text.trim()
        .parse()
        .with_context(|| format!("ffprobe printed no duration: {text:?}"))
}

/// The codec names of a media file's streams, in order (e.g. `["h264", "aac"]`).
pub async fn ffprobe_codecs(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(ffprobe_entries("stream=codec_name", path)
        .await?
        .lines()
        .map(|line| line.trim().trim_end_matches(',').to_owned())
        .filter(|line| !line.is_empty())
        .collect())
}

/// What ffprobe prints of `entries` (`-show_entries`) for the file at `path`, as bare CSV.
async fn ffprobe_entries(entries: &str, path: &Path) -> anyhow::Result<String> {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .await
        .context("running ffprobe (is it installed? scripts/test installs it)")?;
    if !output.status.success() {
        bail!(
            "ffprobe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first bytes of an MP4 (an `ftyp` box) followed by `len` bytes of noise: passes the
/// gateway's sniffing, which is all some tests need of a "video" (ffmpeg refuses it).
pub fn mp4_like(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    bytes.extend(crate::pseudo_random_bytes(
        len.saturating_sub(bytes.len()),
        seed,
    ));
    bytes
}

/// Runs ffmpeg with `args` (inputs, filters, options) writing `output`: for test media that
/// [`generate_video`] does not make (black openings, quiet tones, attached pictures).
pub async fn ffmpeg_generate(args: &[&str], output: &Path) -> anyhow::Result<()> {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .arg(output)
        .output()
        .await
        .context("running ffmpeg (is it installed? scripts/test installs it)")?;
    if !result.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&result.stderr));
    }
    Ok(())
}

/// A file's integrated loudness (LUFS) and true peak (dBTP), as ffmpeg's `ebur128` filter
/// (EBU R128, ITU BS.1770) measures them.
pub async fn ebur128_loudness(path: &Path) -> anyhow::Result<(f64, f64)> {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-nostats", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:a:0",
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ])
        .output()
        .await
        .context("running ffmpeg")?;
    let text = String::from_utf8_lossy(&result.stderr);
    // The summary comes last: `I: -16.0 LUFS` … `Peak: -1.6 dBFS`.
    let summary = text
        .rsplit_once("Summary:")
        .map(|(_, summary)| summary)
        .with_context(|| format!("ebur128 printed no summary: {text}"))?;
    let value = |label: &str| -> anyhow::Result<f64> {
        summary
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .with_context(|| format!("no `{label}` in the ebur128 summary: {summary}"))
    };
    Ok((value("I:")?, value("Peak:")?))
}

/// A picture as `side`×`side` 8-bit grey pixels: `input_args` are ffmpeg's input options and
/// input (`["-ss", "2.5", "-i", "video.mp4"]`, or `["-i", "cover.jpg"]`); the first frame.
pub async fn gray_pixels(input_args: &[&str], side: u32) -> anyhow::Result<Vec<u8>> {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(input_args)
        .args(["-frames:v", "1", "-vf"])
        .arg(format!("scale={side}:{side},format=gray"))
        .args(["-f", "rawvideo", "-"])
        .output()
        .await
        .context("running ffmpeg")?;
    if !result.status.success() || result.stdout.len() != (side * side) as usize {
        bail!(
            "ffmpeg gave no {side}x{side} picture: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(result.stdout)
}

/// What ffprobe says of `entries` (`-show_entries`, e.g. `stream=codec_name,sample_rate`) for
/// the first audio stream of the file at `path`, as bare CSV.
pub async fn ffprobe_audio(entries: &str, path: &Path) -> anyhow::Result<String> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            entries,
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .await
        .context("running ffprobe")?;
    if !output.status.success() {
        bail!(
            "ffprobe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A picture file's width and height, as ffprobe reads them.
pub async fn ffprobe_picture_size(path: &Path) -> anyhow::Result<(u32, u32)> {
    let text = ffprobe_entries("stream=width,height", path).await?;
    let (width, height) = text
        .trim()
        .split_once(',')
        .with_context(|| format!("ffprobe printed no size: {text:?}"))?;
    Ok((width.parse()?, height.parse()?))
}

/// A picture's mean red, green and blue (ffmpeg scales it to one pixel).
pub async fn mean_rgb(path: &Path) -> anyhow::Result<(u8, u8, u8)> {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-vf", "scale=1:1:flags=area,format=rgb24"])
        .args(["-f", "rawvideo", "-"])
        .output()
        .await
        .context("running ffmpeg")?;
    match result.stdout[..] {
        [red, green, blue] => Ok((red, green, blue)),
        _ => bail!("no pixel: {}", String::from_utf8_lossy(&result.stderr)),
    }
}

/// How long a file plays, counted in the samples ffmpeg decodes from its first audio stream
/// (so an MP3's encoder delay and padding, which its LAME header tells decoders to skip, do
/// not count, as they do not for a player).
pub async fn decoded_seconds(path: &Path) -> anyhow::Result<f64> {
    let rate: f64 = ffprobe_audio("stream=sample_rate", path).await?.parse()?;
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ac", "1", "-f", "s16le", "-"])
        .output()
        .await
        .context("running ffmpeg")?;
    if !result.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&result.stderr));
    }
    Ok(result.stdout.len() as f64 / 2.0 / rate)
}
