//! A video's duration, read from its container as the bytes stream past, so that an upload
//! whose `start` option is at or past the end of the video is refused (400) before storage
//! keeps it: storage keeps a file only once the gateway finishes the upload, so even a header
//! at the end of the file arrives in time.
//!
//! - MP4/MOV/M4A: the `moov/mvhd` box, wherever `moov` is; only the top-level box headers and
//!   the first bytes of `moov` are looked at, a few dozen bytes of state.
//! - Matroska/WebM: `Segment/Info/Duration`, which comes before the first cluster, read from at
//!   most the first [`MATROSKA_PREFIX_BYTES`] (a live recording, such as a browser's, often has
//!   none).
//!
//! Other containers, and files that do not say, give no duration here; the converter then
//! refuses such a trim from ffmpeg's own reading of the duration.

use std::time::Duration;

/// How much of a Matroska file is kept to find its `Info`.
pub const MATROSKA_PREFIX_BYTES: usize = 64 * 1024;

/// A duration reader for the container the upload's first bytes named.
#[derive(Debug)]
pub enum DurationProbe {
    /// MP4 and its relatives.
    Mp4(Mp4Duration),
    /// Matroska and WebM.
    Matroska(MatroskaDuration),
}

impl DurationProbe {
    /// A reader for `container` (as [`crate::sniff::media_container`] names it), if there is one.
    pub fn for_container(container: &str) -> Option<Self> {
        match container {
            "mp4/mov" => Some(Self::Mp4(Mp4Duration::default())),
            "matroska/webm" => Some(Self::Matroska(MatroskaDuration::default())),
            _ => None,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        match self {
            Self::Mp4(probe) => probe.feed(bytes),
            Self::Matroska(probe) => probe.feed(bytes),
        }
    }

    /// The duration, if the bytes so far said it.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            Self::Mp4(probe) => probe.duration(),
            Self::Matroska(probe) => probe.duration(),
        }
    }
}

/// Keeps the start of a Matroska stream, where its `Info` is.
#[derive(Debug, Default)]
pub struct MatroskaDuration {
    prefix: Vec<u8>,
}

impl MatroskaDuration {
    /// Takes the next bytes of the stream (up to [`MATROSKA_PREFIX_BYTES`] in all).
    pub fn feed(&mut self, bytes: &[u8]) {
        let room = MATROSKA_PREFIX_BYTES.saturating_sub(self.prefix.len());
        self.prefix
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    /// The duration `Segment/Info` gives, if it is within the kept bytes.
    pub fn duration(&self) -> Option<Duration> {
        matroska_duration(&self.prefix)
    }
}

const EBML_HEADER: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const CLUSTER: u32 = 0x1F43_B675;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;

/// An EBML element's id and the length of its encoding.
fn element_id(bytes: &[u8]) -> Option<(u32, usize)> {
    let first = *bytes.first()?;
    let length = first.leading_zeros() as usize + 1;
    if length > 4 {
        return None;
    }
    let id = bytes
        .get(..length)?
        .iter()
        .fold(0u32, |id, &byte| (id << 8) | u32::from(byte));
    Some((id, length))
}

/// An EBML element's size (`None` inside: unknown) and the length of its encoding.
fn element_size(bytes: &[u8]) -> Option<(Option<u64>, usize)> {
    let first = *bytes.first()?;
    let length = first.leading_zeros() as usize + 1;
    if length > 8 {
        return None;
    }
    let mut value = u64::from(first) & (0xFF_u64 >> length);
    for &byte in bytes.get(1..length)? {
        value = (value << 8) | u64::from(byte);
    }
    let all_ones = (1u64 << (7 * length)) - 1;
    Some(((value != all_ones).then_some(value), length))
}

/// An element at `at` in `bytes`: its id, where its content starts, and its size.
fn element(bytes: &[u8], at: usize) -> Option<(u32, usize, Option<u64>)> {
    let (id, id_length) = element_id(bytes.get(at..)?)?;
    let (size, size_length) = element_size(bytes.get(at + id_length..)?)?;
    Some((id, at + id_length + size_length, size))
}

/// The duration in a Matroska file's first bytes.
fn matroska_duration(bytes: &[u8]) -> Option<Duration> {
    let (id, content, size) = element(bytes, 0)?;
    if id != EBML_HEADER {
        return None;
    }
    let (id, mut at, _) = element(bytes, content + usize::try_from(size?).ok()?)?;
    if id != SEGMENT {
        return None;
    }
    // The segment's children, up to Info (which comes before the first cluster).
    loop {
        let (id, content, size) = element(bytes, at)?;
        let size = usize::try_from(size?).ok()?;
        match id {
            INFO => return info_duration(bytes.get(content..content.checked_add(size)?)?),
            CLUSTER => return None,
            _ => at = content.checked_add(size)?,
        }
    }
}

/// `Duration` × `TimestampScale` (nanoseconds per tick, 1 ms by default) from Info's content.
fn info_duration(info: &[u8]) -> Option<Duration> {
    let (mut at, mut scale, mut ticks) = (0, 1_000_000u64, None);
    while at < info.len() {
        let (id, content, size) = element(info, at)?;
        let size = usize::try_from(size?).ok()?;
        let value = info.get(content..content.checked_add(size)?)?;
        match (id, size) {
            (TIMESTAMP_SCALE, 1..=8) => {
                scale = value.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
            }
            (DURATION, 4) => ticks = Some(f64::from(f32::from_be_bytes(value.try_into().ok()?))),
            (DURATION, 8) => ticks = Some(f64::from_be_bytes(value.try_into().ok()?)),
            _ => {}
        }
        at = content + size;
    }
    let seconds = ticks? * scale as f64 / 1e9;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The bytes of `moov` kept: its `mvhd` child's header and the fields up to its duration.
const MVHD_BYTES: usize = 8 + 4 + 8 + 8 + 4 + 8;

/// Watches a stream of MP4 bytes for its duration.
#[derive(Debug)]
pub struct Mp4Duration {
    /// Bytes seen so far.
    offset: u64,
    /// Where the next top-level box starts.
    next_box: u64,
    /// A box header being read (8 bytes, or 16 with a 64-bit size).
    header: Vec<u8>,
    /// The first bytes of `moov`'s content, while they are being read.
    moov: Option<Vec<u8>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Walking,
    Found(Duration),
    /// Not an MP4 after all, or not one this reads: nothing more is looked at.
    GaveUp,
}

impl Default for Mp4Duration {
    fn default() -> Self {
        Self {
            offset: 0,
            next_box: 0,
            header: Vec::with_capacity(16),
            moov: None,
            state: State::Walking,
        }
    }
}

impl Mp4Duration {
    /// The duration, once the movie header went past.
    pub fn duration(&self) -> Option<Duration> {
        match self.state {
            State::Found(duration) => Some(duration),
            _ => None,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.state == State::Walking {
            if let Some(moov) = &mut self.moov {
                let taken = (MVHD_BYTES - moov.len()).min(bytes.len());
                moov.extend_from_slice(&bytes[..taken]);
                let complete = moov.len() == MVHD_BYTES;
                if complete {
                    self.state = parse_mvhd(moov).map_or(State::GaveUp, State::Found);
                    self.moov = None;
                }
                self.advance(&mut bytes, taken);
                continue;
            }
            if self.offset < self.next_box {
                let skip = (self.next_box - self.offset).min(bytes.len() as u64) as usize;
                self.advance(&mut bytes, skip);
                continue;
            }
            // A box header.
            let needed = if self.header.len() >= 8 && self.size32() == 1 {
                16
            } else {
                8
            };
            let taken = (needed - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..taken]);
            self.advance(&mut bytes, taken);
            if self.header.len() == 8 && self.size32() == 1 {
                continue;
            }
            if self.header.len() < needed {
                continue;
            }
            let header_len = self.header.len() as u64;
            let size = match self.size32() {
                0 => u64::MAX, // to the end of the file
                1 => u64::from_be_bytes(self.header[8..16].try_into().expect("8 bytes")),
                size => u64::from(size),
            };
            let box_start = self.offset - header_len;
            if size < header_len {
                self.state = State::GaveUp;
                break;
            }
            let is_moov = &self.header[4..8] == b"moov";
            self.next_box = box_start.saturating_add(size);
            self.header.clear();
            if is_moov {
                self.moov = Some(Vec::with_capacity(MVHD_BYTES));
            }
        }
    }

    fn size32(&self) -> u32 {
        u32::from_be_bytes(self.header[..4].try_into().expect("4 bytes"))
    }

    fn advance(&mut self, bytes: &mut &[u8], count: usize) {
        *bytes = &bytes[count..];
        self.offset += count as u64;
    }
}

/// The duration in the first bytes of `moov`, if they are an `mvhd` box that gives one.
fn parse_mvhd(content: &[u8]) -> Option<Duration> {
    if content.get(4..8)? != b"mvhd" {
        return None;
    }
    let version = *content.get(8)?;
    let u32_at = |at: usize| {
        content
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        content
            .get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    };
    // After the header (8) and version and flags (4): creation and modification times, the
    // timescale, the duration; 32-bit in version 0, 64-bit times and duration in version 1.
    let (timescale, duration) = match version {
        0 => (u32_at(20)?, u64::from(u32_at(24)?)),
        1 => (u32_at(28)?, u64_at(32)?),
        _ => return None,
    };
    let unknown = duration == u64::from(u32::MAX) || duration == u64::MAX;
    if timescale == 0 || unknown {
        return None;
    }
    Some(Duration::from_secs_f64(
        duration as f64 / f64::from(timescale),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EBML element with a one-byte size (content under 127 bytes) or an eight-byte one.
    fn element_bytes(id: u32, content: &[u8]) -> Vec<u8> {
        let mut bytes: Vec<u8> = id
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        if content.len() < 127 {
            bytes.push(0x80 | content.len() as u8);
        } else {
            bytes.push(0x01);
            bytes.extend(&(content.len() as u64).to_be_bytes()[1..]);
        }
        bytes.extend_from_slice(content);
        bytes
    }

    #[test]
    fn a_matroska_duration_is_read_from_info_before_the_first_cluster() {
        let header = element_bytes(EBML_HEADER, &element_bytes(0x4282, b"webm"));
        let seek_head = element_bytes(0x114D_9B74, &[0u8; 40]);
        let void = element_bytes(0xEC, &[0u8; 200]);
        let mut info = element_bytes(TIMESTAMP_SCALE, &1_000_000u32.to_be_bytes()[1..]);
        info.extend(element_bytes(DURATION, &62_500f64.to_be_bytes()));
        let info = element_bytes(INFO, &info);
        let cluster = element_bytes(CLUSTER, &[0u8; 300]);
        // A segment of unknown size, as a live recording writes it.
        let mut segment = vec![
            0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        segment.extend([seek_head, void, info.clone(), cluster.clone()].concat());
        let file = [header.clone(), segment.clone()].concat();
        let mut probe = DurationProbe::for_container("matroska/webm").unwrap();
        for part in file.chunks(7) {
            probe.feed(part);
        }
        assert_eq!(probe.duration(), Some(Duration::from_millis(62_500)));
        // No Info before the first cluster, or one without a duration: nothing is made up.
        let mut without = segment[..12].to_vec();
        without.extend(&cluster);
        without.extend(&info);
        assert_eq!(matroska_duration(&[header.clone(), without].concat()), None);
        let mut no_duration = segment[..12].to_vec();
        no_duration.extend(element_bytes(INFO, &element_bytes(TIMESTAMP_SCALE, &[1])));
        assert_eq!(matroska_duration(&[header, no_duration].concat()), None);
        assert_eq!(matroska_duration(b"not matroska"), None);
    }

    fn boxed(kind: &[u8; 4], content: &[u8]) -> Vec<u8> {
        let mut bytes = ((content.len() + 8) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(kind);
        bytes.extend_from_slice(content);
        bytes
    }

    fn mvhd_v0(timescale: u32, duration: u32) -> Vec<u8> {
        let mut content = vec![0u8; 4 + 8];
        content.extend(timescale.to_be_bytes());
        content.extend(duration.to_be_bytes());
        content.extend([0u8; 80]);
        boxed(b"mvhd", &content)
    }

    fn read_in_chunks(file: &[u8], chunk: usize) -> Option<Duration> {
        let mut probe = Mp4Duration::default();
        for part in file.chunks(chunk) {
            probe.feed(part);
        }
        probe.duration()
    }

    #[test]
    fn the_duration_is_found_wherever_moov_is_and_however_the_bytes_are_cut() {
        let ftyp = boxed(b"ftyp", b"isomiso2");
        let mdat = boxed(b"mdat", &vec![7u8; 5000]);
        let moov = boxed(b"moov", &mvhd_v0(1000, 62_500));
        for file in [
            [ftyp.clone(), moov.clone(), mdat.clone()].concat(),
            [ftyp.clone(), mdat.clone(), moov.clone()].concat(),
        ] {
            for chunk in [1, 3, 7, 64, 100_000] {
                assert_eq!(
                    read_in_chunks(&file, chunk),
                    Some(Duration::from_millis(62_500)),
                    "chunks of {chunk}"
                );
            }
        }
    }

    #[test]
    fn a_64_bit_box_size_and_a_version_1_header_are_read() {
        let ftyp = boxed(b"ftyp", b"isom");
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend(b"mdat");
        large.extend((16u64 + 10).to_be_bytes());
        large.extend([0u8; 10]);
        let mut content = vec![1u8, 0, 0, 0];
        content.extend([0u8; 16]);
        content.extend(90_000u32.to_be_bytes());
        content.extend((90_000u64 * 3).to_be_bytes());
        content.extend([0u8; 80]);
        let moov = boxed(b"moov", &boxed(b"mvhd", &content));
        let file = [ftyp, large, moov].concat();
        assert_eq!(read_in_chunks(&file, 5), Some(Duration::from_secs(3)));
    }

    #[test]
    fn no_duration_is_made_up() {
        let ftyp = boxed(b"ftyp", b"isom");
        // moov not starting with mvhd, an unknown duration, a broken size, no moov at all.
        let other = boxed(b"moov", &boxed(b"trak", &[0u8; 64]));
        let unknown = boxed(b"moov", &mvhd_v0(1000, u32::MAX));
        let mut broken = ftyp.clone();
        broken.extend([0, 0, 0, 3, b'f', b'r', b'e', b'e']);
        for file in [
            [ftyp.clone(), other].concat(),
            [ftyp.clone(), unknown].concat(),
            broken,
            ftyp.clone(),
        ] {
            assert_eq!(read_in_chunks(&file, 9), None);
        }
    }
}
