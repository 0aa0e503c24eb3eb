//! Options as a request gives them: `name=value` pairs (query parameters, multipart fields,
//! tus Upload-Metadata), all text. A preset is applied first and the explicit options over it.

use crate::{AudioOptions, Cover, Format, Id3Version, Loudness, OptionError, preset};

/// Every option a request may give.
pub const OPTION_NAMES: &[&str] = &[
    "preset",
    "format",
    "quality",
    "bitrate",
    "sample_rate",
    "channels",
    "start",
    "end",
    "normalize",
    "true_peak",
    "cover",
    "id3v2",
    "title",
    "artist",
    "album",
    "year",
    "track",
    "genre",
    "comment",
];

/// Whether `name` is an option (multipart bodies may carry other fields, which are ignored).
pub fn is_option_name(name: &str) -> bool {
    OPTION_NAMES.contains(&name)
}

/// Parses and validates the options in `pairs`: unknown names, a name given twice and values
/// that make no sense are refused, naming the option. No pairs give the defaults.
pub fn parse_options<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<AudioOptions, OptionError> {
    let mut given: Vec<(&'a str, &'a str)> = Vec::new();
    for (name, value) in pairs {
        if !is_option_name(name) {
            return Err(OptionError::new(
                name,
                format!(
                    "is not an option; the options are {}",
                    OPTION_NAMES.join(", ")
                ),
            ));
        }
        if given.iter().any(|(seen, _)| *seen == name) {
            return Err(OptionError::new(name, "is given twice"));
        }
        given.push((name, value.trim()));
    }
    let value = |name: &str| given.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);

    let mut options = match value("preset") {
        Some(name) => preset(name)
            .ok_or_else(|| {
                let names: Vec<&str> = crate::PRESETS.iter().map(|p| p.name).collect();
                OptionError::new(
                    "preset",
                    format!(
                        "`{name}` is not a preset; the presets are {}",
                        names.join(", ")
                    ),
                )
            })?
            .options(),
        None => AudioOptions::default(),
    };
    if let Some(text) = value("format") {
        let format = Format::ALL
            .into_iter()
            .find(|format| format.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                OptionError::new(
                    "format",
                    format!("`{text}` is not a format; use one of {}", names.join(", ")),
                )
            })?;
        if format != options.format {
            // A preset's encoder settings belong to its own format.
            options.quality = None;
            options.bitrate = None;
            options.sample_rate = None;
            options.id3v2 = Id3Version::default();
        }
        options.format = format;
    }
    if let Some(text) = value("quality") {
        options.quality = Some(number(text, "quality", "a number from 0 (best) to 9")?);
        options.bitrate = None;
    }
    if let Some(text) = value("bitrate") {
        let digits = text.strip_suffix(['k', 'K']).unwrap_or(text);
        options.bitrate = Some(number(digits, "bitrate", "a number of kb/s, like 128")?);
        if value("quality").is_none() {
            options.quality = None;
        }
    }
    if let Some(text) = value("sample_rate") {
        options.sample_rate = Some(number(text, "sample_rate", "a number of Hz, like 44100")?);
    }
    if let Some(text) = value("channels") {
        options.channels = Some(match text.to_ascii_lowercase().as_str() {
            "mono" => 1,
            "stereo" => 2,
            _ => number(text, "channels", "1 (mono) or 2 (stereo)")?,
        });
    }
    if let Some(text) = value("start") {
        options.start_ms = Some(milliseconds(text, "start")?);
    }
    if let Some(text) = value("end") {
        options.end_ms = Some(milliseconds(text, "end")?);
    }
    if let Some(text) = value("normalize") {
        options.normalize = match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(Loudness::default()),
            "false" | "no" | "off" | "0" => None,
            _ => {
                let target = text
                    .strip_suffix("LUFS")
                    .unwrap_or(text)
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite())
                    .ok_or_else(|| {
                        OptionError::new(
                            "normalize",
                            "must be true, false or a target loudness in LUFS, like -16",
                        )
                    })?;
                Some(Loudness {
                    target_lufs: target,
                    ..options.normalize.unwrap_or_default()
                })
            }
        };
    }
    if let Some(text) = value("true_peak") {
        let peak = text
            .strip_suffix("dBTP")
            .unwrap_or(text)
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| OptionError::new("true_peak", "must be a number of dBTP, like -1.5"))?;
        let Some(loudness) = options.normalize.as_mut() else {
            return Err(OptionError::new(
                "true_peak",
                "applies only when the loudness is normalised (`normalize`)",
            ));
        };
        loudness.true_peak_dbtp = peak;
    }
    if let Some(text) = value("cover") {
        options.cover = match text.to_ascii_lowercase().as_str() {
            "auto" => Cover::Auto,
            "none" => Cover::None,
            _ => return Err(OptionError::new("cover", "must be auto or none")),
        };
    }
    if let Some(text) = value("id3v2") {
        options.id3v2 = match text {
            "3" | "2.3" => Id3Version::V23,
            "4" | "2.4" => Id3Version::V24,
            _ => return Err(OptionError::new("id3v2", "must be 2.3 or 2.4")),
        };
    }
    for name in [
        "title", "artist", "album", "year", "track", "genre", "comment",
    ] {
        if let Some(text) = value(name) {
            let slot = options.tags.slot(name).expect("a tag name");
            *slot = (!text.is_empty()).then(|| text.to_owned());
        }
    }
    options.validate()?;
    Ok(options)
}

fn number<T: std::str::FromStr>(
    text: &str,
    option: &str,
    expected: &str,
) -> Result<T, OptionError> {
    text.parse().map_err(|_| {
        OptionError::new(
            option,
            format!("must be {expected}, not `{}`", shorten(text)),
        )
    })
}

/// `90`, `90.5`, `1:30`, `01:30.250` or `00:01:30.250`, in milliseconds.
fn milliseconds(text: &str, option: &str) -> Result<u64, OptionError> {
    let wrong = || {
        OptionError::new(
            option,
            format!(
                "must be seconds (90.5) or HH:MM:SS.mmm (00:01:30.500), not `{}`",
                shorten(text)
            ),
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|part| part.is_empty()) {
        return Err(wrong());
    }
    let (whole, seconds) = parts.split_at(parts.len() - 1);
    let seconds = seconds[0];
    let (integer, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if integer.is_empty() || !all_digits(integer) || !all_digits(fraction) || fraction.len() > 3 {
        return Err(wrong());
    }
    let mut total: u64 = 0;
    for (index, part) in whole.iter().enumerate() {
        if !all_digits(part) || part.len() > 6 {
            return Err(wrong());
        }
        let value: u64 = part.parse().map_err(|_| wrong())?;
        // Minutes under hours are below 60.
        if index > 0 && value >= 60 {
            return Err(wrong());
        }
        total = total * 60 + value;
    }
    if !whole.is_empty() && integer.len() > 2 {
        return Err(wrong());
    }
    let whole_seconds: u64 = integer.parse().map_err(|_| wrong())?;
    if !whole.is_empty() && whole_seconds >= 60 {
        return Err(wrong());
    }
    let millis: u64 = format!("{fraction:0<3}").parse().map_err(|_| wrong())?;
    total
        .checked_mul(60)
        .and_then(|minutes| minutes.checked_add(whole_seconds))
        .and_then(|seconds| seconds.checked_mul(1000))
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(wrong)
}

/// A value as quoted back in an error: the first 40 characters.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Quality, Tags};

    fn parse(pairs: &[(&str, &str)]) -> Result<AudioOptions, OptionError> {
        parse_options(pairs.iter().copied())
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        parse(pairs).expect_err("refused").option
    }

    #[test]
    fn no_options_are_the_defaults() {
        assert_eq!(parse(&[]), Ok(AudioOptions::default()));
    }

    #[test]
    fn explicit_options_override_the_preset() {
        let podcast = parse(&[("preset", "podcast")]).unwrap();
        assert_eq!(podcast.preset.as_deref(), Some("podcast"));
        assert!(podcast.normalize.is_some());
        let louder = parse(&[
            ("preset", "podcast"),
            ("normalize", "-14"),
            ("bitrate", "128"),
        ])
        .unwrap();
        assert_eq!(louder.normalize.unwrap().target_lufs, -14.0);
        assert_eq!(louder.quality(), Quality::Constant(128));
        assert_eq!(louder.channels, podcast.channels);
        // Another format drops the preset's encoder settings, which were for its own format.
        let as_opus = parse(&[("preset", "podcast"), ("format", "opus")]).unwrap();
        assert_eq!(as_opus.format, Format::Opus);
        assert_eq!(as_opus.quality(), Quality::Vbr(2));
        assert_eq!(as_opus.sample_rate, None);
    }

    #[test]
    fn every_kind_of_value_is_read() {
        let options = parse(&[
            ("format", "M4A"),
            ("bitrate", "160k"),
            ("sample_rate", "48000"),
            ("channels", "mono"),
            ("start", "1:02.5"),
            ("end", "00:01:30.250"),
            ("normalize", "true"),
            ("true_peak", "-2"),
            ("cover", "none"),
            ("title", " A title "),
            ("artist", "Someone"),
            ("year", "2024"),
            ("track", "3/12"),
        ])
        .unwrap();
        assert_eq!(options.format, Format::M4a);
        assert_eq!(options.quality(), Quality::Constant(160));
        assert_eq!(options.sample_rate, Some(48000));
        assert_eq!(options.channels, Some(1));
        assert_eq!(options.start_ms, Some(62_500));
        assert_eq!(options.end_ms, Some(90_250));
        assert_eq!(
            options.normalize,
            Some(Loudness {
                target_lufs: -16.0,
                true_peak_dbtp: -2.0
            })
        );
        assert_eq!(options.cover, Cover::None);
        assert_eq!(
            options.tags,
            Tags {
                title: Some("A title".into()),
                artist: Some("Someone".into()),
                year: Some("2024".into()),
                track: Some("3/12".into()),
                ..Tags::default()
            }
        );
    }

    #[test]
    fn times_are_seconds_or_clock_readings() {
        for (text, ms) in [
            ("0", 0),
            ("90", 90_000),
            ("90.5", 90_500),
            ("1:30", 90_000),
            ("01:30.250", 90_250),
            ("1:00:00", 3_600_000),
            ("00:00:01.005", 1_005),
        ] {
            assert_eq!(milliseconds(text, "start"), Ok(ms), "{text}");
        }
        for text in [
            "",
            "-1",
            "1:60",
            "1:2:3:4",
            "1.2.3",
            "1:30.1234",
            "abc",
            "1::2",
            ":5",
        ] {
            assert!(milliseconds(text, "start").is_err(), "{text}");
        }
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        assert_eq!(refused(&[("format", "wav")]), "format");
        assert_eq!(refused(&[("bitrate", "7")]), "bitrate");
        assert_eq!(refused(&[("bitrate", "fast")]), "bitrate");
        assert_eq!(refused(&[("start", "10"), ("end", "5")]), "end");
        assert_eq!(refused(&[("start", "soon")]), "start");
        assert_eq!(refused(&[("preset", "loud")]), "preset");
        assert_eq!(refused(&[("colour", "red")]), "colour");
        assert_eq!(refused(&[("title", "a"), ("title", "b")]), "title");
        assert_eq!(refused(&[("true_peak", "-1")]), "true_peak");
        assert_eq!(refused(&[("normalize", "loud")]), "normalize");
        assert_eq!(refused(&[("cover", "video")]), "cover");
        assert_eq!(refused(&[("id3v2", "2.2")]), "id3v2");
        assert_eq!(refused(&[("channels", "5")]), "channels");
        let huge = "t".repeat(5 * 1024 * 1024);
        assert_eq!(refused(&[("title", &huge)]), "title");
        let error = parse(&[("bitrate", "7")]).unwrap_err();
        assert!(
            error.to_string().starts_with("`bitrate`: 7 kb/s"),
            "{error}"
        );
    }
}
