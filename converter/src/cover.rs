//! Cover art. For a video, a representative frame: ffmpeg decodes only key frames (cheap, and
//! seeking to one costs no decoding of the frames before it), from a tenth of the way in (past
//! opening titles and fades), drops the black and the blank ones (a frame of one colour has a
//! luma entropy near 0) and lets its `thumbnail` filter pick, of the next three, the one
//! closest to their average. An audio file's attached picture is kept as its cover. Either is
//! scaled to fit 600×600 and written as a JPEG, which every format's picture tag takes.

use crate::description::Picture;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// Cover pictures fit in this square.
pub const MAX_COVER_SIDE: u32 = 600;
/// Where the search for a frame starts, at most.
const LATEST_SEEK: Duration = Duration::from_secs(60);
/// Frames below this normalised luma entropy are black or blank.
const MIN_ENTROPY: f64 = 0.2;

fn scale() -> String {
    format!(
        "scale=w='min({MAX_COVER_SIDE},iw)':h='min({MAX_COVER_SIDE},ih)':force_original_aspect_ratio=decrease"
    )
}

/// Where a search for a frame starts in a video of `duration`.
pub fn seek_point(duration: Option<Duration>) -> Duration {
    duration.map_or(Duration::ZERO, |duration| (duration / 10).min(LATEST_SEEK))
}

/// ffmpeg's arguments (after its global ones) that write the cover of `input` to `output`,
/// looking from `seek` on; `None` when the input has no picture.
pub fn extraction_args(
    picture: Picture,
    seek: Duration,
    input: &Path,
    output: &Path,
) -> Option<Vec<OsString>> {
    let mut args: Vec<OsString> = Vec::new();
    let filter = match picture {
        Picture::None => return None,
        Picture::Frames => {
            args.extend(["-skip_frame", "nokey", "-ss"].map(OsString::from));
            args.push(format!("{:.3}", seek.as_secs_f64()).into());
            format!(
                "entropy,metadata=mode=select:key=lavfi.entropy.normalized_entropy.normal.Y:value={MIN_ENTROPY}:function=greater,thumbnail=3,showinfo,{}",
                scale()
            )
        }
        Picture::Attached => scale(),
    };
    // One decoder thread: for the few frames decoded, starting a frame-threaded decoder costs
    // more than it gives (measured: 0.20 s of CPU with the default threads, 0.16 s with one,
    // for a 720p H.264 video).
    args.extend(["-threads", "1", "-i"].map(OsString::from));
    args.push(input.into());
    args.extend(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf"].map(OsString::from));
    args.push(filter.into());
    args.extend(
        [
            "-frames:v",
            "1",
            "-q:v",
            "3",
            "-f",
            "image2",
            "-c:v",
            "mjpeg",
        ]
        .map(OsString::from),
    );
    args.push(output.into());
    Some(args)
}

/// How the picture is described in the file: where in the video the frame is, or that it is
/// the source's own.
pub fn description(picture: Picture, at: Option<Duration>) -> String {
    match (picture, at) {
        (Picture::Frames, Some(at)) => format!("frame at {}", clock_ms(at)),
        (Picture::Frames, None) => "frame of the video".to_owned(),
        _ => "cover".to_owned(),
    }
}

/// `00:01:02.500`.
pub fn clock_ms(time: Duration) -> String {
    let ms = time.as_millis();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A JPEG's width and height, from its start-of-frame segment.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    let mut at = 2;
    if jpeg.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return None;
        }
        let marker = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            let segment = jpeg.get(at + 4..at + 9)?;
            let height = u16::from_be_bytes([segment[1], segment[2]]);
            let width = u16::from_be_bytes([segment[3], segment[4]]);
            return Some((u32::from(width), u32::from(height)));
        }
        at += 2 + length;
    }
    None
}

/// A FLAC picture block (front cover), as Ogg Opus files carry it base64-encoded in their
/// `METADATA_BLOCK_PICTURE` comment.
pub fn flac_picture_block(jpeg: &[u8], description: &str) -> Vec<u8> {
    let (width, height) = jpeg_size(jpeg).unwrap_or((0, 0));
    let mime = b"image/jpeg";
    let mut block = Vec::with_capacity(jpeg.len() + 64);
    let mut put = |value: u32| block.extend_from_slice(&value.to_be_bytes());
    put(3); // front cover
    put(mime.len() as u32);
    block.extend_from_slice(mime);
    block.extend_from_slice(&(description.len() as u32).to_be_bytes());
    block.extend_from_slice(description.as_bytes());
    for value in [width, height, 24, 0, jpeg.len() as u32] {
        block.extend_from_slice(&value.to_be_bytes());
    }
    block.extend_from_slice(jpeg);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_starts_a_tenth_of_the_way_in_and_at_most_a_minute() {
        assert_eq!(seek_point(None), Duration::ZERO);
        assert_eq!(
            seek_point(Some(Duration::from_secs(30))),
            Duration::from_secs(3)
        );
        assert_eq!(seek_point(Some(Duration::from_secs(3600))), LATEST_SEEK);
    }

    #[test]
    fn no_picture_no_cover_and_an_attached_one_is_only_scaled() {
        let (input, output) = (Path::new("in"), Path::new("cover.jpg"));
        assert!(extraction_args(Picture::None, Duration::ZERO, input, output).is_none());
        let attached = extraction_args(Picture::Attached, Duration::ZERO, input, output).unwrap();
        assert!(!attached.contains(&OsString::from("-ss")));
        let frames =
            extraction_args(Picture::Frames, Duration::from_millis(2500), input, output).unwrap();
        let at = frames.iter().position(|arg| arg == "-ss").unwrap();
        assert_eq!(frames[at + 1], "2.500");
    }

    #[test]
    fn clock_readings_and_descriptions() {
        assert_eq!(clock_ms(Duration::from_millis(3_723_045)), "01:02:03.045");
        assert_eq!(
            description(Picture::Frames, Some(Duration::from_millis(8_333))),
            "frame at 00:00:08.333"
        );
        assert_eq!(description(Picture::Attached, None), "cover");
    }

    #[test]
    fn a_picture_block_says_its_size_and_carries_the_jpeg() {
        // SOI, an APP0 segment, then SOF0 saying 338 high and 600 wide.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        jpeg.extend([0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0x52, 0x02, 0x58]);
        jpeg.extend([0u8; 12]);
        assert_eq!(jpeg_size(&jpeg), Some((600, 338)));
        assert_eq!(jpeg_size(b"not a jpeg"), None);
        let block = flac_picture_block(&jpeg, "cover");
        assert_eq!(&block[..4], &3u32.to_be_bytes());
        assert_eq!(&block[8..18], b"image/jpeg");
        assert!(block.ends_with(&jpeg));
        let sizes = 4 + 4 + 10 + 4 + 5;
        assert_eq!(&block[sizes..sizes + 8], &[0, 0, 2, 88, 0, 0, 1, 82]);
    }
}
