//! Presets: names for the common choices, so a user need not know encoders. `GET /presets`
//! lists them; explicit options given beside a preset override its own.

use crate::{AudioOptions, Format, Loudness};

/// A named set of options.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// What a request names it.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    build: fn() -> AudioOptions,
}

impl Preset {
    /// The options it stands for, naming it.
    pub fn options(&self) -> AudioOptions {
        AudioOptions {
            preset: Some(self.name.to_owned()),
            ..(self.build)()
        }
    }
}

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "music",
        description: "MP3 at LAME's best variable-bitrate quality (-V 0, about 245 kb/s), stereo, with cover art",
        build: || AudioOptions {
            quality: Some(0),
            ..AudioOptions::default()
        },
    },
    Preset {
        name: "podcast",
        description: "MP3 at a constant 96 kb/s, mono, 44.1 kHz, normalised to -16 LUFS (true peak -1.5 dBTP), as the podcast platforms ask",
        build: || AudioOptions {
            bitrate: Some(96),
            channels: Some(1),
            sample_rate: Some(44100),
            normalize: Some(Loudness::default()),
            ..AudioOptions::default()
        },
    },
    Preset {
        name: "voice",
        description: "Opus at about 32 kb/s, mono, normalised to -16 LUFS: small files of speech that stay clear",
        build: || AudioOptions {
            format: Format::Opus,
            quality: Some(9),
            channels: Some(1),
            normalize: Some(Loudness::default()),
            ..AudioOptions::default()
        },
    },
    Preset {
        name: "archive",
        description: "FLAC: lossless, the source's sample rate and channels, with cover art",
        build: || AudioOptions {
            format: Format::Flac,
            ..AudioOptions::default()
        },
    },
];

/// The preset called `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS
        .iter()
        .find(|preset| preset.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_set_of_options_naming_itself() {
        for preset in PRESETS {
            let options = preset.options();
            assert_eq!(options.validate(), Ok(()), "{}", preset.name);
            assert_eq!(options.preset.as_deref(), Some(preset.name));
        }
        assert!(preset("Podcast").is_some());
        assert!(preset("loud").is_none());
    }
}
