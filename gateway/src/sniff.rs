//! Recognising a video or audio container from its first bytes, so that an upload of anything
//! else is refused (415) before a byte of it is stored. The declared content type and file name
//! are the client's word; the magic numbers are the file's.

/// Bytes needed to recognise every container below (MPEG-TS needs its second packet's sync
/// byte, at 188).
pub const SNIFF_BYTES: usize = 512;

/// MPEG transport stream packets are 188 bytes, each starting with this sync byte.
const TS_PACKET: usize = 188;

/// The container `prefix` starts with, if it is one ffmpeg can take audio from.
pub fn media_container(prefix: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| prefix.get(offset..offset + magic.len()) == Some(magic);
    if at(4, b"ftyp") {
        return Some("mp4/mov");
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("matroska/webm");
    }
    if at(0, b"RIFF") && (at(8, b"AVI ") || at(8, b"WAVE")) {
        return Some("riff");
    }
    if at(0, b"FLV\x01") {
        return Some("flv");
    }
    if at(0, &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        return Some("asf/wmv");
    }
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) || at(0, &[0x00, 0x00, 0x01, 0xB3]) {
        return Some("mpeg-ps");
    }
    if prefix.len() > TS_PACKET && prefix.iter().step_by(TS_PACKET).all(|&b| b == 0x47) {
        return Some("mpeg-ts");
    }
    if at(0, b"OggS") {
        return Some("ogg");
    }
    if at(0, b"fLaC") {
        return Some("flac");
    }
    if at(0, b"ID3") || (prefix.len() >= 2 && prefix[0] == 0xFF && prefix[1] & 0xE0 == 0xE0) {
        return Some("mpeg-audio");
    }
    if at(0, b"#!AMR") {
        return Some("amr");
    }
    if at(0, b"FORM") && at(8, b"AIFF") {
        return Some("aiff");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_containers() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4/mov"),
            (b"\x00\x00\x00\x14ftypqt  ", "mp4/mov"),
            (b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81", "matroska/webm"),
            (b"RIFF\x24\x00\x00\x00AVI LIST", "riff"),
            (b"RIFF\x24\x00\x00\x00WAVEfmt ", "riff"),
            (b"FLV\x01\x05\x00\x00\x00\x09", "flv"),
            (b"\x00\x00\x01\xBA\x44\x00", "mpeg-ps"),
            (b"OggS\x00\x02\x00\x00", "ogg"),
            (b"ID3\x04\x00\x00\x00\x00", "mpeg-audio"),
            (b"\xFF\xFB\x90\x64\x00", "mpeg-audio"),
            (b"fLaC\x00\x00\x00\x22", "flac"),
        ];
        for (prefix, expected) in cases {
            assert_eq!(media_container(prefix), Some(*expected), "{prefix:?}");
        }
        let mut transport_stream = vec![0u8; 2 * TS_PACKET];
        transport_stream[0] = 0x47;
        transport_stream[TS_PACKET] = 0x47;
        assert_eq!(media_container(&transport_stream), Some("mpeg-ts"));
        assert_eq!(media_container(b"G is for a text file"), None);
    }

    #[test]
    fn refuses_everything_else() {
        let cases: &[&[u8]] = &[
            b"",
            b"hello, this is a text file named clip.mp4",
            b"%PDF-1.7\n%\xE2\xE3",
            b"\x89PNG\r\n\x1A\n\x00\x00",
            b"PK\x03\x04\x14\x00",
            b"\x7FELF\x02\x01\x01",
            b"RIFF\x24\x00\x00\x00WEBPVP8 ",
            b"<!DOCTYPE html>",
            b"\x00\x00\x00\x20ftx",
        ];
        for prefix in cases {
            assert_eq!(media_container(prefix), None, "{prefix:?}");
        }
    }
}
