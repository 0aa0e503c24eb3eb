//! What ffmpeg says about its input before it converts anything (`Input #0 … Metadata …
//! Duration … Stream #0:…`), and the few lines of its filters that a pass asks for. The one
//! ffmpeg run that reads the input tells the converter everything it needs to know about it,
//! so no separate ffprobe run is paid for on a file that converts.

use std::time::Duration;

/// Tags of a source worth carrying into the audio file; the rest (`major_brand`,
/// `handler_name`, `encoder`…) describe the source's container, not the recording.
const CARRIED_TAGS: &[&str] = &[
    "title",
    "artist",
    "album",
    "album_artist",
    "composer",
    "performer",
    "date",
    "track",
    "disc",
    "genre",
    "comment",
    "description",
    "copyright",
    "publisher",
];

/// What the input's first video stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Picture {
    /// No video stream.
    #[default]
    None,
    /// Moving pictures: the cover is a frame of them.
    Frames,
    /// A still picture attached to an audio file (its cover).
    Attached,
}

/// What the description of the input said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputFacts {
    /// `Some(None)` when ffmpeg said `Duration: N/A`; `None` before the line came.
    pub duration: Option<Option<Duration>>,
    /// The carried tags, in the source's order (container-wide first, then the first audio
    /// stream's, which is where Ogg keeps them), the first of each name kept.
    pub tags: Vec<(String, String)>,
    /// The first video stream.
    pub picture: Picture,
    /// The first audio stream's sample rate.
    pub sample_rate: Option<u32>,
}

impl InputFacts {
    /// The source's own tag `name`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Before,
    Input,
    GlobalTags,
    Stream { first_audio: bool },
    StreamTags { first_audio: bool },
    Loudnorm,
    Done,
}

/// Reads ffmpeg's stderr line by line (with `-loglevel level+info`).
#[derive(Debug)]
pub struct DescriptionReader {
    section: Section,
    facts: InputFacts,
    seen_audio: bool,
    seen_video: bool,
    /// The last tag read, which a continuation line extends.
    last_tag: Option<usize>,
    loudnorm: Option<String>,
    frame_time: Option<f64>,
}

/// What one line was.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Information, consumed.
    Info,
    /// A warning or an error, for the log.
    Complaint,
}

impl Default for DescriptionReader {
    fn default() -> Self {
        Self {
            section: Section::Before,
            facts: InputFacts::default(),
            seen_audio: false,
            seen_video: false,
            last_tag: None,
            loudnorm: None,
            frame_time: None,
        }
    }
}

impl DescriptionReader {
    /// Takes one line in.
    pub fn read(&mut self, line: &str) -> Line {
        if self.section == Section::Loudnorm {
            let text = self.loudnorm.get_or_insert_with(String::new);
            if text.len() < 4096 {
                text.push_str(line);
                text.push('\n');
            }
            if line.trim() == "}" {
                self.section = Section::Done;
            }
            return Line::Info;
        }
        if let Some(rest) = line.strip_prefix('[')
            && rest.starts_with("Parsed_")
        {
            // A filter's own line: `[Parsed_loudnorm_0 @ 0x…] [info] …`.
            let Some((_, message)) = line.split_once("] [info] ") else {
                return Line::Complaint;
            };
            if rest.starts_with("Parsed_loudnorm") {
                self.section = Section::Loudnorm;
                self.loudnorm = Some(message.to_owned());
            } else if rest.starts_with("Parsed_showinfo")
                && self.frame_time.is_none()
                && let Some(time) = message.split("pts_time:").nth(1)
            {
                self.frame_time = time
                    .split_whitespace()
                    .next()
                    .and_then(|time| time.parse().ok());
            }
            return Line::Info;
        }
        let Some(info) = line.strip_prefix("[info] ") else {
            return Line::Complaint;
        };
        self.describe(info);
        Line::Info
    }

    fn describe(&mut self, line: &str) {
        if self.section == Section::Done {
            return;
        }
        if line.starts_with("Input #0") {
            self.section = Section::Input;
            return;
        }
        if self.section == Section::Before {
            return;
        }
        if line.starts_with("Input #") || line.starts_with("Output #") || line == "Stream mapping:"
        {
            self.section = Section::Done;
            return;
        }
        if let Some(duration) = input_duration(line) {
            self.facts.duration.get_or_insert(duration);
            self.section = Section::Input;
            return;
        }
        if let Some(stream) = line.strip_prefix("  Stream #0:") {
            let first_audio = stream.contains(": Audio: ") && !self.seen_audio;
            if stream.contains(": Audio: ") {
                self.seen_audio = true;
                if first_audio {
                    self.facts.sample_rate = sample_rate(stream);
                }
            } else if stream.contains(": Video: ") && !self.seen_video {
                self.seen_video = true;
                self.facts.picture = if stream.contains("(attached pic)") {
                    Picture::Attached
                } else {
                    Picture::Frames
                };
            }
            self.section = Section::Stream { first_audio };
            return;
        }
        match (self.section, line.trim_start().len() + 2 == line.len()) {
            (Section::Input, true) if line.trim() == "Metadata:" => {
                self.section = Section::GlobalTags;
                self.last_tag = None;
            }
            (Section::Stream { first_audio }, _) if line.trim() == "Metadata:" => {
                self.section = Section::StreamTags { first_audio };
                self.last_tag = None;
            }
            (Section::GlobalTags, _) => self.tag_line(line, true),
            (Section::StreamTags { first_audio }, _) => self.tag_line(line, first_audio),
            _ => {}
        }
    }

    /// `    title           : My clip`, or a continuation `                    : line two`.
    fn tag_line(&mut self, line: &str, keep: bool) {
        let Some((key, value)) = line
            .split_once(" : ")
            .or_else(|| line.strip_suffix(" :").map(|key| (key, "")))
        else {
            return;
        };
        let key = key.trim();
        if key.is_empty() {
            if let Some(index) = self.last_tag {
                let (_, text) = &mut self.facts.tags[index];
                text.push('\n');
                text.push_str(value);
            }
            return;
        }
        self.last_tag = None;
        let key = key.to_ascii_lowercase();
        if keep && CARRIED_TAGS.contains(&key.as_str()) && self.facts.tag(&key).is_none() {
            self.facts.tags.push((key, value.to_owned()));
            self.last_tag = Some(self.facts.tags.len() - 1);
        }
    }

    /// The facts read so far.
    pub fn facts(&self) -> &InputFacts {
        &self.facts
    }

    /// Everything read: the facts, loudnorm's JSON report and the time of the frame that a
    /// `showinfo` filter passed, when the pass had them.
    pub fn finish(self) -> (InputFacts, Option<String>, Option<f64>) {
        (self.facts, self.loudnorm, self.frame_time)
    }
}

/// The duration in ffmpeg's description of its input (`  Duration: 00:01:02.50, start: …`):
/// `Some(None)` when it says `N/A`, `None` when the line is another one.
pub fn input_duration(line: &str) -> Option<Option<Duration>> {
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

/// `…: Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, …` → 44100.
fn sample_rate(stream: &str) -> Option<u32> {
    stream
        .split(", ")
        .find_map(|part| part.strip_suffix(" Hz"))
        .and_then(|rate| rate.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> DescriptionReader {
        let mut reader = DescriptionReader::default();
        for line in text.lines() {
            reader.read(line);
        }
        reader
    }

    const MP4: &str = "\
[info] Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'input':
[info]   Metadata:
[info]     major_brand     : isom
[info]     title           : Source Title
[info]     comment         : line one
[info]                     : line two
[info]     encoder         : Lavf59.27.100
[info]   Duration: 00:01:00.00, start: 0.000000, bitrate: 3096 kb/s
[info]   Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1280x720 [SAR 1:1 DAR 16:9], 2964 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
[info]     Metadata:
[info]       handler_name    : VideoHandler
[info]   Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
[info]     Metadata:
[info]       handler_name    : SoundHandler
[info] Stream mapping:
[info]   Stream #0:1 -> #0:0 (aac (native) -> mp3 (libmp3lame))
[warning] something odd
";

    #[test]
    fn the_description_gives_duration_carried_tags_the_picture_and_the_rate() {
        let reader = read(MP4);
        let (facts, loudnorm, frame) = reader.finish();
        assert_eq!(facts.duration, Some(Some(Duration::from_secs(60))));
        assert_eq!(
            facts.tags,
            vec![
                ("title".to_owned(), "Source Title".to_owned()),
                ("comment".to_owned(), "line one\nline two".to_owned()),
            ]
        );
        assert_eq!(facts.picture, Picture::Frames);
        assert_eq!(facts.sample_rate, Some(44100));
        assert_eq!((loudnorm, frame), (None, None));
    }

    #[test]
    fn an_audio_file_with_a_cover_and_ogg_stream_tags_are_understood() {
        let text = "\
[info] Input #0, ogg, from 'input':
[info]   Duration: 00:00:05.00, start: 0.000000, bitrate: 64 kb/s
[info]   Stream #0:0: Audio: opus, 48000 Hz, stereo, fltp
[info]     Metadata:
[info]       TITLE           : Ogg title
[info]       ARTIST          : Ogg artist
[info]   Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc), 600x600, 90k tbr, 90k tbn (attached pic)
";
        let facts = read(text).finish().0;
        assert_eq!(facts.tag("title"), Some("Ogg title"));
        assert_eq!(facts.tag("artist"), Some("Ogg artist"));
        assert_eq!(facts.picture, Picture::Attached);
        assert_eq!(facts.sample_rate, Some(48000));
    }

    #[test]
    fn complaints_are_told_from_information_and_filter_reports_are_kept() {
        let mut reader = DescriptionReader::default();
        assert_eq!(
            reader.read("[warning] deprecated pixel format"),
            Line::Complaint
        );
        assert_eq!(reader.read("[error] broken frame"), Line::Complaint);
        assert_eq!(reader.read("[info] size=N/A time=00:00:18.00"), Line::Info);
        assert_eq!(
            reader.read(
                "[Parsed_showinfo_3 @ 0x55] [info] n:   0 pts:  35840 pts_time:2.33333 pos: 3"
            ),
            Line::Info
        );
        assert_eq!(
            reader.read("[Parsed_loudnorm_0 @ 0x55] [info] "),
            Line::Info
        );
        for line in ["{", "\t\"input_i\" : \"-21.77\",", "}"] {
            assert_eq!(reader.read(line), Line::Info);
        }
        assert_eq!(reader.read("not a log line"), Line::Complaint);
        let (_, loudnorm, frame) = reader.finish();
        assert!(loudnorm.unwrap().contains("\"input_i\" : \"-21.77\""));
        assert_eq!(frame, Some(2.33333));
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
}
