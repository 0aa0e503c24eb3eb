//! The options in the storage contract's messages, both ways. Reading them validates them, so
//! storage refuses (INVALID_ARGUMENT) a set the gateway would have refused.

use crate::{AudioOptions, Cover, Format, Id3Version, Loudness, OptionError, Tags};
use proto::storage::v1 as pb;

impl AudioOptions {
    /// The options as the contract carries them.
    pub fn to_proto(&self) -> pb::AudioOptions {
        let tags = &self.tags;
        pb::AudioOptions {
            preset: self.preset.clone().unwrap_or_default(),
            format: match self.format {
                Format::Mp3 => pb::AudioFormat::Mp3,
                Format::M4a => pb::AudioFormat::M4a,
                Format::Opus => pb::AudioFormat::Opus,
                Format::Flac => pb::AudioFormat::Flac,
            }
            .into(),
            quality: self.quality.map(u32::from),
            bitrate_kbps: self.bitrate.map(u32::from),
            sample_rate: self.sample_rate,
            channels: self.channels.map(u32::from),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            normalize: self.normalize.map(|loudness| pb::Loudness {
                target_lufs: loudness.target_lufs,
                true_peak_dbtp: loudness.true_peak_dbtp,
            }),
            tags: Some(pb::AudioTags {
                title: tags.title.clone(),
                artist: tags.artist.clone(),
                album: tags.album.clone(),
                year: tags.year.clone(),
                track: tags.track.clone(),
                genre: tags.genre.clone(),
                comment: tags.comment.clone(),
            }),
            cover: match self.cover {
                Cover::Auto => pb::CoverArt::Auto,
                Cover::None => pb::CoverArt::None,
            }
            .into(),
            id3v2_version: match self.id3v2 {
                Id3Version::V23 => 3,
                Id3Version::V24 => 4,
            },
        }
    }

    /// The options a message carries, checked; no message means the defaults.
    pub fn from_proto(message: Option<&pb::AudioOptions>) -> Result<Self, OptionError> {
        let Some(message) = message else {
            return Ok(Self::default());
        };
        let narrow = |value: Option<u32>, option: &str| -> Result<Option<u16>, OptionError> {
            value
                .map(|value| {
                    u16::try_from(value).map_err(|_| OptionError::new(option, "is out of range"))
                })
                .transpose()
        };
        let format = match pb::AudioFormat::try_from(message.format) {
            Ok(pb::AudioFormat::Unspecified | pb::AudioFormat::Mp3) => Format::Mp3,
            Ok(pb::AudioFormat::M4a) => Format::M4a,
            Ok(pb::AudioFormat::Opus) => Format::Opus,
            Ok(pb::AudioFormat::Flac) => Format::Flac,
            Err(_) => return Err(OptionError::new("format", "is not a known format")),
        };
        let cover = match pb::CoverArt::try_from(message.cover) {
            Ok(pb::CoverArt::Unspecified | pb::CoverArt::Auto) => Cover::Auto,
            Ok(pb::CoverArt::None) => Cover::None,
            Err(_) => return Err(OptionError::new("cover", "must be auto or none")),
        };
        let id3v2 = match message.id3v2_version {
            0 | 3 => Id3Version::V23,
            4 => Id3Version::V24,
            _ => return Err(OptionError::new("id3v2", "must be 3 or 4")),
        };
        let tags = message.tags.clone().unwrap_or_default();
        let options = Self {
            preset: Some(message.preset.clone()).filter(|name| !name.is_empty()),
            format,
            quality: narrow(message.quality, "quality")?
                .map(|q| u8::try_from(q).unwrap_or(u8::MAX)),
            bitrate: narrow(message.bitrate_kbps, "bitrate")?,
            sample_rate: message.sample_rate,
            channels: narrow(message.channels, "channels")?
                .map(|c| u8::try_from(c).unwrap_or(u8::MAX)),
            start_ms: message.start_ms,
            end_ms: message.end_ms,
            normalize: message.normalize.map(|loudness| Loudness {
                target_lufs: loudness.target_lufs,
                true_peak_dbtp: loudness.true_peak_dbtp,
            }),
            tags: Tags {
                title: tags.title,
                artist: tags.artist,
                album: tags.album,
                year: tags.year,
                track: tags.track,
                genre: tags.genre,
                comment: tags.comment,
            },
            cover,
            id3v2,
        };
        options.validate()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_the_contract_both_ways() {
        let options = crate::parse_options([
            ("preset", "podcast"),
            ("start", "2"),
            ("end", "9.5"),
            ("title", "Episode 1"),
            ("cover", "none"),
        ])
        .unwrap();
        let back = AudioOptions::from_proto(Some(&options.to_proto())).unwrap();
        assert_eq!(back, options);
        assert_eq!(
            AudioOptions::from_proto(None).unwrap(),
            AudioOptions::default()
        );
        // An empty message is an old job's: the defaults.
        let empty = pb::AudioOptions::default();
        assert_eq!(
            AudioOptions::from_proto(Some(&empty)).unwrap(),
            AudioOptions::default()
        );
    }

    #[test]
    fn a_message_with_impossible_options_is_refused() {
        let message = pb::AudioOptions {
            bitrate_kbps: Some(7),
            ..pb::AudioOptions::default()
        };
        let error = AudioOptions::from_proto(Some(&message)).unwrap_err();
        assert_eq!(error.option, "bitrate");
        let message = pb::AudioOptions {
            quality: Some(300),
            ..pb::AudioOptions::default()
        };
        assert_eq!(
            AudioOptions::from_proto(Some(&message)).unwrap_err().option,
            "quality"
        );
    }
}
