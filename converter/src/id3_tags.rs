//! An MP3's ID3v2 tag, written in this process rather than by an ffmpeg pass that copies the
//! file once more: one ffmpeg start fewer for the default job. It also writes a comment as the
//! `COMM` frame that players show, where ffmpeg's MP3 muxer writes `TXXX:comment`.

use audio_options::Id3Version;
use id3::TagLike;
use id3::frame::{Comment, ExtendedText, Picture, PictureType};
use std::path::Path;

/// Writes `tags` (ffmpeg's names: `title`, `date`, `track`…) and the JPEG `picture` (with its
/// description) into the MP3 at `path`, as ID3v2 `version`.
pub fn write(
    path: &Path,
    tags: &[(String, String)],
    picture: Option<(Vec<u8>, String)>,
    version: Id3Version,
) -> Result<(), id3::Error> {
    // ffmpeg wrote a tag with its encoder's name only (the encode pass maps no metadata).
    let mut tag = id3::Tag::read_from_path(path).unwrap_or_default();
    for (key, value) in tags {
        // A text frame cannot hold NUL; the job's tags never do, a source's might.
        let value: String = value.chars().filter(|c| *c != '\0').collect();
        match frame_id(key, version) {
            Some("COMM") => {
                tag.add_frame(Comment {
                    lang: "eng".into(),
                    description: String::new(),
                    text: value,
                });
            }
            Some("TYER") => tag.set_text("TYER", value.chars().take(4).collect::<String>()),
            Some(id) => tag.set_text(id, value),
            None => {
                tag.add_frame(ExtendedText {
                    description: key.clone(),
                    value,
                });
            }
        }
    }
    if let Some((data, description)) = picture {
        tag.add_frame(Picture {
            mime_type: "image/jpeg".into(),
            picture_type: PictureType::CoverFront,
            description,
            data,
        });
    }
    let version = match version {
        Id3Version::V23 => id3::Version::Id3v23,
        Id3Version::V24 => id3::Version::Id3v24,
    };
    tag.write_to_path(path, version)
}

/// The frame that holds ffmpeg's tag `key`; `None` for a user-defined `TXXX` one.
fn frame_id(key: &str, version: Id3Version) -> Option<&'static str> {
    Some(match key {
        "title" => "TIT2",
        "artist" => "TPE1",
        "album" => "TALB",
        "album_artist" => "TPE2",
        "composer" => "TCOM",
        "track" => "TRCK",
        "disc" => "TPOS",
        "genre" => "TCON",
        "copyright" => "TCOP",
        "publisher" => "TPUB",
        "comment" => "COMM",
        // ID3v2.3 has a year; 2.4 a recording time, which takes a whole date.
        "date" => match version {
            Id3Version::V23 => "TYER",
            Id3Version::V24 => "TDRC",
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_to_their_frames_and_the_year_to_the_versions_own() {
        assert_eq!(frame_id("title", Id3Version::V23), Some("TIT2"));
        assert_eq!(frame_id("date", Id3Version::V23), Some("TYER"));
        assert_eq!(frame_id("date", Id3Version::V24), Some("TDRC"));
        assert_eq!(frame_id("comment", Id3Version::V24), Some("COMM"));
        assert_eq!(frame_id("performer", Id3Version::V23), None);
    }

    #[test]
    fn a_tag_is_written_into_an_mp3_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp3");
        // An MPEG-1 layer III frame header and silence: enough of an MP3 for a tag.
        let mut bytes = vec![0xFF, 0xFB, 0x90, 0x64];
        bytes.resize(417, 0);
        std::fs::write(&path, &bytes).unwrap();
        let tags = vec![
            ("title".to_owned(), "Tïtle".to_owned()),
            ("date".to_owned(), "2024-05-31".to_owned()),
            ("comment".to_owned(), "a comment".to_owned()),
            ("performer".to_owned(), "someone".to_owned()),
        ];
        let picture = Some((
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            "frame at 00:00:01.000".to_owned(),
        ));
        write(&path, &tags, picture, Id3Version::V23).unwrap();
        let tag = id3::Tag::read_from_path(&path).unwrap();
        assert_eq!(tag.version(), id3::Version::Id3v23);
        assert_eq!(tag.title(), Some("Tïtle"));
        assert_eq!(
            tag.get("TYER").and_then(|f| f.content().text()),
            Some("2024")
        );
        assert_eq!(
            tag.comments().next().map(|c| c.text.as_str()),
            Some("a comment")
        );
        assert_eq!(
            tag.extended_texts().next().map(|t| t.value.as_str()),
            Some("someone")
        );
        // (The picture's content is checked by mutagen, a reader of its own, in
        // tests/audio_options.rs; this crate reads back a picture this small as unknown.)
        assert!(tag.get("APIC").is_some(), "a picture frame");
        assert!(
            std::fs::read(&path).unwrap().ends_with(&bytes),
            "the sound is untouched"
        );
    }
}
