//! What a conversion job makes: the format, its quality, trimming, loudness, tags and cover
//! art. One crate so that the three services that handle options agree on them: the gateway
//! parses them from a request (and resolves a preset), storage refuses a set that makes no
//! sense before recording it, and the converter turns a recorded set into ffmpeg's arguments.
//! Validation lives here once, so a job in storage can always be converted as recorded.

#![forbid(unsafe_code)]

mod parse;
mod presets;
mod proto_map;

pub use parse::{OPTION_NAMES, is_option_name, parse_options};
pub use presets::{PRESETS, Preset, preset};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest tag value, in characters.
pub const MAX_TAG_CHARS: usize = 1024;
/// Longest source a trim point may name: a day.
pub const MAX_TRIM_MS: u64 = 24 * 3600 * 1000;
/// The default loudness target, LUFS (what the podcast platforms ask for).
pub const DEFAULT_TARGET_LUFS: f64 = -16.0;
/// The default true-peak ceiling, dBTP.
pub const DEFAULT_TRUE_PEAK_DBTP: f64 = -1.5;
/// The VBR quality used when a job gives neither `quality` nor `bitrate` (LAME's `-V 2`, what
/// every job made before options existed).
pub const DEFAULT_QUALITY: u8 = 2;

/// A set of options that cannot be used, naming the option at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{option}`: {message}")]
pub struct OptionError {
    /// The option's name as a request gives it.
    pub option: String,
    /// What is wrong with it, for the user.
    pub message: String,
}

impl OptionError {
    pub(crate) fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            option: option.into(),
            message: message.into(),
        }
    }
}

/// The kind of file a job makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// MP3 (LAME).
    #[default]
    Mp3,
    /// AAC in an MPEG-4 audio file.
    M4a,
    /// Opus in Ogg.
    Opus,
    /// FLAC, lossless.
    Flac,
}

impl Format {
    /// Every format, in the order the API lists them.
    pub const ALL: [Format; 4] = [Format::Mp3, Format::M4a, Format::Opus, Format::Flac];

    /// The name a request uses.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mp3 => "mp3",
            Format::M4a => "m4a",
            Format::Opus => "opus",
            Format::Flac => "flac",
        }
    }

    /// The name a person reads ("Your Opus file is ready").
    pub fn label(self) -> &'static str {
        match self {
            Format::Mp3 => "MP3",
            Format::M4a => "M4A",
            Format::Opus => "Opus",
            Format::Flac => "FLAC",
        }
    }

    /// The downloaded file's extension.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// The downloaded file's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Mp3 => "audio/mpeg",
            Format::M4a => "audio/mp4",
            Format::Opus => "audio/ogg",
            Format::Flac => "audio/flac",
        }
    }

    /// Whether quality settings mean anything for it.
    pub fn is_lossless(self) -> bool {
        self == Format::Flac
    }

    /// The constant bitrates, kbit/s, its encoder accepts.
    fn bitrates(self) -> BitrateRule {
        match self {
            // LAME's bitrates for MPEG-1 and -2 layer III.
            Format::Mp3 => BitrateRule::OneOf(&[
                8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
            ]),
            Format::M4a => BitrateRule::Between(16, 512),
            Format::Opus => BitrateRule::Between(6, 510),
            Format::Flac => BitrateRule::None,
        }
    }

    /// The sample rates, Hz, the format can carry.
    fn sample_rates(self) -> &'static [u32] {
        match self {
            Format::Mp3 => &[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000],
            Format::M4a => &[
                8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000,
            ],
            // libopus encodes at these; a player decodes every Opus file at 48 kHz anyway.
            Format::Opus => &[8000, 12000, 16000, 24000, 48000],
            Format::Flac => &[
                8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400,
                192000,
            ],
        }
    }
}

enum BitrateRule {
    OneOf(&'static [u16]),
    Between(u16, u16),
    None,
}

/// Loudness normalisation (EBU R128 / ITU BS.1770).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Loudness {
    /// Integrated loudness target, LUFS.
    pub target_lufs: f64,
    /// True-peak ceiling, dBTP.
    pub true_peak_dbtp: f64,
}

impl Default for Loudness {
    fn default() -> Self {
        Self {
            target_lufs: DEFAULT_TARGET_LUFS,
            true_peak_dbtp: DEFAULT_TRUE_PEAK_DBTP,
        }
    }
}

/// Tags written into the file. An unset one keeps the source's own; the title defaults to the
/// source's title, else the original file name without its extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Tags {
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Artist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Album.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Year (`2024`) or date (`2024-05-31`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<String>,
    /// Track number (`3` or `3/12`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// Genre.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl Tags {
    /// Each tag with its option name (also its name in ffmpeg's metadata, except `year`).
    pub fn entries(&self) -> [(&'static str, Option<&str>); 7] {
        [
            ("title", self.title.as_deref()),
            ("artist", self.artist.as_deref()),
            ("album", self.album.as_deref()),
            ("year", self.year.as_deref()),
            ("track", self.track.as_deref()),
            ("genre", self.genre.as_deref()),
            ("comment", self.comment.as_deref()),
        ]
    }

    pub(crate) fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "title" => &mut self.title,
            "artist" => &mut self.artist,
            "album" => &mut self.album,
            "year" => &mut self.year,
            "track" => &mut self.track,
            "genre" => &mut self.genre,
            "comment" => &mut self.comment,
            _ => return None,
        })
    }
}

/// Which picture the file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cover {
    /// A representative frame of the video; an audio-only source keeps its own picture.
    #[default]
    Auto,
    /// None.
    None,
}

/// The ID3v2 version of an MP3's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum Id3Version {
    /// ID3v2.3: what every player reads.
    #[default]
    #[serde(rename = "2.3")]
    V23,
    /// ID3v2.4.
    #[serde(rename = "2.4")]
    V24,
}

/// How a job's audio is made. [`AudioOptions::default`] is what every job made before options
/// existed, plus cover art.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct AudioOptions {
    /// The preset the options started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The format.
    pub format: Format,
    /// Variable-bitrate quality, 0 (best) to 9 (smallest); with neither this nor `bitrate`,
    /// 2. For MP3 it is LAME's `-V`; for AAC and Opus it picks an average bitrate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// Constant bitrate, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u16>,
    /// Sample rate, Hz; unset keeps what the encoder picks for the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// 1 (mono) or 2 (stereo); unset keeps the source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// The first moment kept, milliseconds into the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// The moment the kept part ends, milliseconds into the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Loudness normalisation; unset leaves the loudness as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Loudness>,
    /// Tags.
    pub tags: Tags,
    /// Cover art.
    pub cover: Cover,
    /// For MP3: the ID3v2 version.
    pub id3v2: Id3Version,
}

/// How the encoder is asked for its quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Variable bitrate at this quality (0 best, 9 smallest).
    Vbr(u8),
    /// Constant bitrate, kbit/s.
    Constant(u16),
    /// Lossless: nothing to choose.
    Lossless,
}

impl AudioOptions {
    /// The encoder's quality: what the job asks, else [`DEFAULT_QUALITY`].
    pub fn quality(&self) -> Quality {
        match (self.format.is_lossless(), self.bitrate, self.quality) {
            (true, _, _) => Quality::Lossless,
            (false, Some(kbps), _) => Quality::Constant(kbps),
            (false, None, quality) => Quality::Vbr(quality.unwrap_or(DEFAULT_QUALITY)),
        }
    }

    /// The downloaded file's name: the video's name with the format's extension instead of
    /// its own.
    pub fn output_filename(&self, original: &str) -> String {
        format!(
            "{}.{}",
            title_from_filename(original),
            self.format.extension()
        )
    }

    /// Checks the options against each other and against what the format can carry.
    pub fn validate(&self) -> Result<(), OptionError> {
        let format = self.format;
        if let Some(quality) = self.quality {
            if format.is_lossless() {
                return Err(lossless("quality", format));
            }
            if quality > 9 {
                return Err(OptionError::new(
                    "quality",
                    "must be 0 (best) to 9 (smallest)",
                ));
            }
        }
        if let Some(kbps) = self.bitrate {
            if self.quality.is_some() {
                return Err(OptionError::new(
                    "bitrate",
                    "give `quality` (variable bitrate) or `bitrate` (constant), not both",
                ));
            }
            match format.bitrates() {
                BitrateRule::None => return Err(lossless("bitrate", format)),
                BitrateRule::OneOf(allowed) if !allowed.contains(&kbps) => {
                    let list: Vec<String> = allowed.iter().map(u16::to_string).collect();
                    return Err(OptionError::new(
                        "bitrate",
                        format!(
                            "{kbps} kb/s is not an {} bitrate; use one of {}",
                            format.label(),
                            list.join(", ")
                        ),
                    ));
                }
                BitrateRule::Between(low, high) if !(low..=high).contains(&kbps) => {
                    return Err(OptionError::new(
                        "bitrate",
                        format!(
                            "{} bitrates go from {low} to {high} kb/s, not {kbps}",
                            format.label()
                        ),
                    ));
                }
                _ => {}
            }
        }
        if let Some(rate) = self.sample_rate
            && !format.sample_rates().contains(&rate)
        {
            let list: Vec<String> = format.sample_rates().iter().map(u32::to_string).collect();
            return Err(OptionError::new(
                "sample_rate",
                format!(
                    "{} files can be made at {} Hz, not {rate}",
                    format.label(),
                    list.join(", ")
                ),
            ));
        }
        if let Some(channels) = self.channels
            && !(1..=2).contains(&channels)
        {
            return Err(OptionError::new(
                "channels",
                "must be 1 (mono) or 2 (stereo)",
            ));
        }
        for (name, value) in [("start", self.start_ms), ("end", self.end_ms)] {
            if value.is_some_and(|ms| ms > MAX_TRIM_MS) {
                return Err(OptionError::new(name, "must be within 24 hours"));
            }
        }
        if let Some(end) = self.end_ms {
            if end == 0 {
                return Err(OptionError::new("end", "must be after the beginning"));
            }
            if let Some(start) = self.start_ms
                && end <= start
            {
                return Err(OptionError::new("end", "must be after `start`"));
            }
        }
        if let Some(loudness) = self.normalize {
            if !(-70.0..=-5.0).contains(&loudness.target_lufs) {
                return Err(OptionError::new(
                    "normalize",
                    "the target must be between -70 and -5 LUFS",
                ));
            }
            if !(-9.0..=0.0).contains(&loudness.true_peak_dbtp) {
                return Err(OptionError::new(
                    "true_peak",
                    "must be between -9 and 0 dBTP",
                ));
            }
        }
        for (name, value) in self.tags.entries() {
            if let Some(value) = value {
                check_tag(name, value)?;
            }
        }
        if self.id3v2 == Id3Version::V24 && format != Format::Mp3 {
            return Err(OptionError::new(
                "id3v2",
                format!("applies to MP3 files only, not {}", format.label()),
            ));
        }
        Ok(())
    }
}

fn lossless(option: &str, format: Format) -> OptionError {
    OptionError::new(
        option,
        format!(
            "{} is lossless: there is no quality to choose",
            format.label()
        ),
    )
}

fn check_tag(name: &str, value: &str) -> Result<(), OptionError> {
    if value.chars().count() > MAX_TAG_CHARS {
        return Err(OptionError::new(
            name,
            format!("is longer than {MAX_TAG_CHARS} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(name == "comment" && c == '\n'))
    {
        return Err(OptionError::new(name, "holds control characters"));
    }
    let digits = |text: &str, max_len: usize| {
        !text.is_empty() && text.len() <= max_len && text.bytes().all(|b| b.is_ascii_digit())
    };
    match name {
        "year" => {
            let mut parts = value.split('-');
            let year_ok = parts
                .next()
                .is_some_and(|year| year.len() == 4 && digits(year, 4));
            let rest_ok = parts.all(|part| part.len() == 2 && digits(part, 2));
            if !(year_ok && rest_ok && value.len() <= 10) {
                return Err(OptionError::new(
                    name,
                    "must be a year (2024) or a date (2024-05-31)",
                ));
            }
        }
        "track" => {
            let mut parts = value.splitn(2, '/');
            let ok = parts.next().is_some_and(|n| digits(n, 4) && n != "0")
                && parts.next().is_none_or(|total| digits(total, 4));
            if !ok {
                return Err(OptionError::new(name, "must be a number (3) or 3/12"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A file name without its directory and extension, as a title: `holiday.mp4` → `holiday`.
pub fn title_from_filename(original: &str) -> &str {
    let base = original.rsplit(['/', '\\']).next().unwrap_or_default();
    let stem = match base.rfind('.') {
        Some(dot) if dot > 0 => &base[..dot],
        _ => base,
    };
    let stem = stem.trim();
    if stem.is_empty() { "audio" } else { stem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut AudioOptions)) -> AudioOptions {
        let mut options = AudioOptions::default();
        change(&mut options);
        options
    }

    #[test]
    fn the_defaults_are_the_mp3_every_job_made_before_options() {
        let options = AudioOptions::default();
        assert_eq!(options.validate(), Ok(()));
        assert_eq!(options.format, Format::Mp3);
        assert_eq!(options.quality(), Quality::Vbr(2));
        assert_eq!(options.cover, Cover::Auto);
        assert_eq!(options.id3v2, Id3Version::V23);
    }

    #[test]
    fn impossible_combinations_are_refused_naming_the_option() {
        let cases: Vec<(AudioOptions, &str)> = vec![
            (with(|o| o.bitrate = Some(7)), "bitrate"),
            (with(|o| o.quality = Some(10)), "quality"),
            (
                with(|o| {
                    o.quality = Some(2);
                    o.bitrate = Some(128);
                }),
                "bitrate",
            ),
            (
                with(|o| {
                    o.format = Format::Flac;
                    o.bitrate = Some(128);
                }),
                "bitrate",
            ),
            (
                with(|o| {
                    o.format = Format::Opus;
                    o.sample_rate = Some(44100);
                }),
                "sample_rate",
            ),
            (with(|o| o.channels = Some(6)), "channels"),
            (
                with(|o| {
                    o.start_ms = Some(5000);
                    o.end_ms = Some(4000);
                }),
                "end",
            ),
            (
                with(|o| o.tags.title = Some("x".repeat(MAX_TAG_CHARS + 1))),
                "title",
            ),
            (with(|o| o.tags.year = Some("24".into())), "year"),
            (with(|o| o.tags.track = Some("0".into())), "track"),
            (with(|o| o.tags.artist = Some("a\u{0}b".into())), "artist"),
            (
                with(|o| {
                    o.format = Format::M4a;
                    o.id3v2 = Id3Version::V24;
                }),
                "id3v2",
            ),
            (
                with(|o| {
                    o.normalize = Some(Loudness {
                        target_lufs: 3.0,
                        true_peak_dbtp: -1.0,
                    })
                }),
                "normalize",
            ),
        ];
        for (options, option) in cases {
            let error = options.validate().expect_err(option);
            assert_eq!(error.option, option, "{error}");
        }
    }

    #[test]
    fn sensible_choices_are_accepted() {
        for options in [
            with(|o| o.bitrate = Some(320)),
            with(|o| {
                o.format = Format::Opus;
                o.bitrate = Some(24);
                o.sample_rate = Some(48000);
                o.channels = Some(1);
            }),
            with(|o| {
                o.format = Format::Flac;
                o.sample_rate = Some(96000);
            }),
            with(|o| {
                o.start_ms = Some(1500);
                o.end_ms = Some(9000);
                o.tags.year = Some("2024-05-31".into());
                o.tags.track = Some("3/12".into());
                o.tags.comment = Some("two\nlines".into());
                o.normalize = Some(Loudness::default());
            }),
        ] {
            assert_eq!(options.validate(), Ok(()), "{options:?}");
        }
    }

    #[test]
    fn the_output_is_named_after_the_video_with_the_format_extension() {
        let m4a = with(|o| o.format = Format::M4a);
        assert_eq!(m4a.output_filename("holiday.mp4"), "holiday.m4a");
        assert_eq!(
            AudioOptions::default().output_filename("talk.final.mkv"),
            "talk.final.mp3"
        );
        assert_eq!(
            AudioOptions::default().output_filename("noext"),
            "noext.mp3"
        );
        assert_eq!(AudioOptions::default().output_filename(""), "audio.mp3");
        assert_eq!(AudioOptions::default().output_filename(".mp4"), ".mp4.mp3");
    }
}
