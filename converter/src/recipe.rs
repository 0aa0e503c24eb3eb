//! From a job's options to ffmpeg's arguments, pass by pass: pure functions, so every choice
//! (codec, quality, trimming, filters, tags) is tested without running ffmpeg.
//!
//! A job runs up to four passes: measure the loudness (only to normalise it), encode, take
//! the cover frame, and finish: a copy of the encoded stream (no re-encoding) that writes the
//! tags and the picture (except for MP3, whose ID3 tag the converter writes itself, see
//! [`crate::id3_tags`]). Tags are written in the finish pass from one FFMETADATA file, so
//! they are exactly the ones chosen here (the source's carried tags, then the job's) and no
//! command line limit applies to a long value or a picture.

use crate::description::InputFacts;
use crate::loudness::{self, Measurement};
use crate::media::Encoding;
use audio_options::{AudioOptions, Format, Loudness, Quality, title_from_filename};
use std::ffi::OsString;
use std::time::Duration;

/// Average bitrates, kbit/s, that `quality` 0–9 stands for in AAC: ffmpeg's own AAC encoder
/// has no dependable VBR mode, so quality picks an average bitrate instead.
const AAC_KBPS: [u16; 10] = [256, 224, 192, 160, 144, 128, 112, 96, 80, 64];
/// Target bitrates, kbit/s, of libopus's VBR for `quality` 0–9.
const OPUS_KBPS: [u16; 10] = [192, 160, 128, 112, 96, 80, 64, 48, 40, 32];

/// How far under the job's true-peak ceiling loudnorm aims for a lossy format: encoding
/// overshoots the peaks it was given (measured here: a normalised clip with clicks went from
/// loudnorm's -1.5 to -1.4 dBTP as an MP3), so the file itself stays under the ceiling.
const LOSSY_PEAK_HEADROOM_DB: f64 = 0.5;

/// What loudnorm is asked for: the job's target, with headroom under the ceiling for a lossy
/// format's overshoot.
fn loudnorm_target(options: &AudioOptions, target: Loudness) -> Loudness {
    let headroom = if options.format.is_lossless() {
        0.0
    } else {
        LOSSY_PEAK_HEADROOM_DB
    };
    Loudness {
        true_peak_dbtp: target.true_peak_dbtp - headroom,
        ..target
    }
}

/// The part of the source kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trim {
    /// The first moment kept.
    pub start: Option<Duration>,
    /// The moment the kept part ends.
    pub end: Option<Duration>,
}

impl Trim {
    /// The options' trim points.
    pub fn of(options: &AudioOptions) -> Self {
        Self {
            start: options.start_ms.map(Duration::from_millis),
            end: options.end_ms.map(Duration::from_millis),
        }
    }

    /// Input options (before `-i`): ffmpeg seeks, then decodes to the exact sample.
    pub fn input_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(start) = self.start.filter(|start| !start.is_zero()) {
            args.push("-ss".into());
            args.push(format!("{:.3}", start.as_secs_f64()).into());
        }
        if let Some(end) = self.end {
            args.push("-to".into());
            args.push(format!("{:.3}", end.as_secs_f64()).into());
        }
        args
    }

    /// How long the kept part of a source of `duration` is.
    pub fn kept(&self, duration: Duration) -> Duration {
        let end = self.end.map_or(duration, |end| end.min(duration));
        end.saturating_sub(self.start.unwrap_or_default())
    }
}

/// The muxer that writes `format`.
pub fn muxer(format: Format) -> &'static str {
    match format {
        Format::Mp3 => "mp3",
        // The iPod flavour of MPEG-4: an `M4A ` brand, which players take for audio.
        Format::M4a => "ipod",
        Format::Opus => "ogg",
        Format::Flac => "flac",
    }
}

/// The measuring pass's arguments after the input: the first audio stream into loudnorm,
/// nothing written.
pub fn measure_args(options: &AudioOptions) -> Vec<OsString> {
    let target = loudnorm_target(options, options.normalize.unwrap_or_default());
    let mut args: Vec<OsString> = ["-map", "0:a:0", "-vn", "-sn", "-dn", "-af"]
        .map(OsString::from)
        .into();
    args.push(loudness::measuring_filter(target).into());
    args.extend(["-f", "null", "-"].map(OsString::from));
    args
}

/// The encoding pass's arguments after the input, up to (not including) the output path.
/// `mp3_default` is the operator's MP3 encoding for a job that names no quality;
/// `measured` is the first pass's measurement when the job normalises; `source_rate` the
/// source's sample rate, which loudnorm (it works at 192 kHz) would otherwise not keep.
pub fn encode_args(
    options: &AudioOptions,
    mp3_default: Encoding,
    measured: Option<Measurement>,
    source_rate: Option<u32>,
) -> Vec<OsString> {
    let mut args: Vec<String> = ["-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1"]
        .map(String::from)
        .into();
    let mut sample_rate = options.sample_rate;
    if let Some(target) = options.normalize {
        args.push("-af".into());
        args.push(loudness::applying_filter(
            loudnorm_target(options, target),
            measured,
        ));
        sample_rate = sample_rate.or(match options.format {
            Format::Opus => Some(48_000),
            _ => source_rate.or(Some(48_000)),
        });
    }
    let explicit_quality = options.quality.is_some() || options.bitrate.is_some();
    match (options.format, options.quality()) {
        (Format::Mp3, quality) => {
            args.extend(["-c:a", "libmp3lame"].map(String::from));
            let encoding = match quality {
                _ if !explicit_quality => mp3_default,
                Quality::Constant(kbps) => Encoding::Cbr(kbps),
                Quality::Vbr(level) => Encoding::Vbr(level),
                Quality::Lossless => mp3_default,
            };
            match encoding {
                Encoding::Vbr(level) => args.extend(["-q:a".into(), level.to_string()]),
                Encoding::Cbr(kbps) => args.extend(["-b:a".into(), format!("{kbps}k")]),
            }
        }
        (Format::M4a, quality) => {
            args.extend(["-c:a", "aac"].map(String::from));
            let kbps = match quality {
                Quality::Constant(kbps) => kbps,
                Quality::Vbr(level) => AAC_KBPS[usize::from(level.min(9))],
                Quality::Lossless => AAC_KBPS[2],
            };
            args.extend(["-b:a".into(), format!("{kbps}k")]);
        }
        (Format::Opus, quality) => {
            args.extend(["-c:a", "libopus"].map(String::from));
            let (kbps, vbr) = match quality {
                Quality::Constant(kbps) => (kbps, "off"),
                Quality::Vbr(level) => (OPUS_KBPS[usize::from(level.min(9))], "on"),
                Quality::Lossless => (OPUS_KBPS[2], "on"),
            };
            args.extend(["-b:a".into(), format!("{kbps}k"), "-vbr".into(), vbr.into()]);
        }
        (Format::Flac, _) => args.extend(["-c:a", "flac"].map(String::from)),
    }
    if let Some(rate) = sample_rate {
        args.extend(["-ar".into(), rate.to_string()]);
    }
    // Without `-ac`, the source's layout is kept where the encoder takes it (LAME takes one
    // or two channels, and ffmpeg down-mixes for it).
    if let Some(channels) = options.channels {
        args.extend(["-ac".into(), channels.to_string()]);
    }
    args.extend(["-f".into(), muxer(options.format).into()]);
    args.into_iter().map(OsString::from).collect()
}

/// The tags the file gets: the source's carried tags, the job's over them, and a title
/// whatever happens (the source's, else the original file name's stem).
pub fn chosen_tags(
    facts: &InputFacts,
    options: &AudioOptions,
    original_filename: &str,
) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = facts.tags.clone();
    for (name, value) in options.tags.entries() {
        let Some(value) = value else { continue };
        let key = if name == "year" { "date" } else { name };
        match tags.iter_mut().find(|(existing, _)| existing == key) {
            Some((_, existing)) => *existing = value.to_owned(),
            None => tags.push((key.to_owned(), value.to_owned())),
        }
    }
    if !tags
        .iter()
        .any(|(key, value)| key == "title" && !value.trim().is_empty())
    {
        tags.retain(|(key, _)| key != "title");
        tags.insert(
            0,
            (
                "title".into(),
                title_from_filename(original_filename).to_owned(),
            ),
        );
    }
    tags
}

/// An FFMETADATA file holding `tags` (and, for Ogg, the base64 picture block).
pub fn metadata_file(tags: &[(String, String)], picture_block_base64: Option<&str>) -> String {
    let mut text = String::from(";FFMETADATA1\n");
    let entries = tags
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .chain(picture_block_base64.map(|block| ("METADATA_BLOCK_PICTURE", block)));
    for (key, value) in entries {
        text.push_str(&escape_metadata(key));
        text.push('=');
        text.push_str(&escape_metadata(value));
        text.push('\n');
    }
    text
}

/// FFMETADATA's escaping: `=`, `;`, `#`, `\` and line ends are preceded by a backslash.
fn escape_metadata(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '=' | ';' | '#' | '\\' | '\n') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The finish pass's arguments after its inputs (0: the encoded audio, 1: the metadata file,
/// 2: the cover, when there is one and the format carries pictures as a stream), up to the
/// output path. `cover_description` names the picture.
pub fn finish_args(options: &AudioOptions, cover_description: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<String> = ["-map", "0:a"].map(String::from).into();
    let picture_stream = options.format != Format::Opus;
    if let (Some(description), true) = (cover_description, picture_stream) {
        args.extend(["-map", "2:0", "-disposition:v:0", "attached_pic"].map(String::from));
        args.extend(["-metadata:s:v:0".into(), format!("title={description}")]);
        // ID3's picture type: ffmpeg reads it from the picture's comment.
        args.extend(["-metadata:s:v:0", "comment=Cover (front)"].map(String::from));
    }
    args.extend(["-c", "copy"].map(String::from));
    if options.format == Format::Opus {
        // Ogg keeps its comments on the stream; the encoded stream's own are replaced.
        args.extend(["-map_metadata", "-1", "-map_metadata:s:a:0", "1:g"].map(String::from));
    } else {
        args.extend(["-map_metadata", "1"].map(String::from));
    }
    args.extend(["-f".into(), muxer(options.format).into()]);
    args.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use audio_options::parse_options;

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|arg| arg.to_str().unwrap()).collect()
    }

    fn has_pair(args: &[OsString], flag: &str, value: &str) -> bool {
        strings(args).windows(2).any(|pair| pair == [flag, value])
    }

    #[test]
    fn the_defaults_encode_as_every_job_did_before_options() {
        let args = encode_args(
            &AudioOptions::default(),
            Encoding::Vbr(2),
            None,
            Some(44100),
        );
        assert_eq!(
            strings(&args),
            [
                "-map",
                "0:a:0",
                "-vn",
                "-sn",
                "-dn",
                "-map_metadata",
                "-1",
                "-c:a",
                "libmp3lame",
                "-q:a",
                "2",
                "-f",
                "mp3"
            ]
        );
        // The operator's default applies when the job names no quality.
        let cbr = encode_args(&AudioOptions::default(), Encoding::Cbr(192), None, None);
        assert!(has_pair(&cbr, "-b:a", "192k"));
    }

    #[test]
    fn each_format_gets_its_encoder_and_quality() {
        let options = |pairs: &[(&str, &str)]| parse_options(pairs.iter().copied()).unwrap();
        let vbr0 = encode_args(
            &options(&[("quality", "0")]),
            Encoding::Cbr(128),
            None,
            None,
        );
        assert!(has_pair(&vbr0, "-q:a", "0"));
        let m4a = encode_args(&options(&[("format", "m4a")]), Encoding::Vbr(2), None, None);
        assert!(has_pair(&m4a, "-c:a", "aac") && has_pair(&m4a, "-b:a", "192k"));
        assert!(has_pair(&m4a, "-f", "ipod"));
        let opus = encode_args(
            &options(&[("format", "opus"), ("bitrate", "24"), ("channels", "1")]),
            Encoding::Vbr(2),
            None,
            None,
        );
        assert!(has_pair(&opus, "-b:a", "24k") && has_pair(&opus, "-vbr", "off"));
        assert!(has_pair(&opus, "-ac", "1") && has_pair(&opus, "-f", "ogg"));
        let voice = encode_args(
            &options(&[("preset", "voice")]),
            Encoding::Vbr(2),
            None,
            None,
        );
        assert!(has_pair(&voice, "-b:a", "32k") && has_pair(&voice, "-vbr", "on"));
        let flac = encode_args(
            &options(&[("format", "flac"), ("sample_rate", "96000")]),
            Encoding::Vbr(2),
            None,
            None,
        );
        assert!(has_pair(&flac, "-c:a", "flac") && has_pair(&flac, "-ar", "96000"));
        assert!(!strings(&flac).contains(&"-b:a"));
    }

    #[test]
    fn normalising_keeps_the_source_rate_that_loudnorm_would_lose() {
        let options = parse_options([("normalize", "true")]).unwrap();
        let args = encode_args(&options, Encoding::Vbr(2), None, Some(44100));
        assert!(has_pair(&args, "-ar", "44100"));
        // Half a decibel under the ceiling for the lossy encoder's overshoot.
        assert!(has_pair(&args, "-af", "loudnorm=I=-16:TP=-2:LRA=11"));
        let flac = parse_options([("normalize", "true"), ("format", "flac")]).unwrap();
        let args = encode_args(&flac, Encoding::Vbr(2), None, Some(44100));
        assert!(has_pair(&args, "-af", "loudnorm=I=-16:TP=-1.5:LRA=11"));
        let opus = parse_options([("normalize", "true"), ("format", "opus")]).unwrap();
        assert!(has_pair(
            &encode_args(&opus, Encoding::Vbr(2), None, Some(44100)),
            "-ar",
            "48000"
        ));
    }

    #[test]
    fn trimming_seeks_in_the_input_and_says_how_much_is_kept() {
        let options = parse_options([("start", "1.5"), ("end", "01:00")]).unwrap();
        let trim = Trim::of(&options);
        assert_eq!(
            strings(&trim.input_args()),
            ["-ss", "1.500", "-to", "60.000"]
        );
        assert_eq!(
            trim.kept(Duration::from_secs(90)),
            Duration::from_millis(58_500)
        );
        assert_eq!(
            trim.kept(Duration::from_secs(30)),
            Duration::from_millis(28_500)
        );
        assert!(Trim::default().input_args().is_empty());
    }

    #[test]
    fn the_title_is_the_jobs_else_the_sources_else_the_file_name() {
        let facts = InputFacts {
            tags: vec![
                ("title".into(), "Source title".into()),
                ("artist".into(), "Source artist".into()),
            ],
            ..InputFacts::default()
        };
        let plain = AudioOptions::default();
        assert_eq!(chosen_tags(&facts, &plain, "clip.mp4"), facts.tags);
        let mine = parse_options([("title", "Mine"), ("year", "2024")]).unwrap();
        assert_eq!(
            chosen_tags(&facts, &mine, "clip.mp4"),
            vec![
                ("title".to_owned(), "Mine".to_owned()),
                ("artist".to_owned(), "Source artist".to_owned()),
                ("date".to_owned(), "2024".to_owned()),
            ]
        );
        assert_eq!(
            chosen_tags(&InputFacts::default(), &plain, "holiday.final.mp4"),
            vec![("title".to_owned(), "holiday.final".to_owned())]
        );
    }

    #[test]
    fn metadata_files_escape_what_ffmpeg_would_misread() {
        let tags = vec![("comment".to_owned(), "a=b; #c \\ d\ne".to_owned())];
        assert_eq!(
            metadata_file(&tags, Some("QUJD")),
            ";FFMETADATA1\ncomment=a\\=b\\; \\#c \\\\ d\\\ne\nMETADATA_BLOCK_PICTURE=QUJD\n"
        );
    }

    #[test]
    fn the_finish_pass_copies_the_stream_and_attaches_the_picture_where_the_format_can() {
        let m4a = parse_options([("format", "m4a")]).unwrap();
        let args = finish_args(&m4a, Some("frame at 00:00:01.000"));
        assert!(has_pair(&args, "-map", "2:0") && has_pair(&args, "-c", "copy"));
        assert!(has_pair(&args, "-disposition:v:0", "attached_pic"));
        let opus = parse_options([("format", "opus")]).unwrap();
        let args = finish_args(&opus, Some("cover"));
        assert!(
            !has_pair(&args, "-map", "2:0"),
            "Ogg takes the picture as a comment"
        );
        assert!(has_pair(&args, "-map_metadata:s:a:0", "1:g"));
    }
}
