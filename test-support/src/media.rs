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
