//! Audio options end to end, judged by readers nobody here wrote: uploads through the real
//! gateway (options as query parameters or multipart fields), the real converter and ffmpeg,
//! then the downloaded file read by mutagen (tags, pictures, bitrate mode), ffprobe (codec,
//! rate, channels, duration) and ffmpeg's `ebur128` filter (loudness).
//!
//! mutagen comes from the test venv (scripts/install; scripts/test puts it on PATH, as for
//! every Python tool of the suite).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use test_support::media::decoded_seconds;
use test_support::mesh::{Mesh, MeshOptions, User};
use test_support::{
    Running, SmtpCapture, TempDir, ebur128_loudness, ffmpeg_generate, ffprobe_audio, gray_pixels,
    temp_dir,
};

/// Options as name/value pairs.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Long enough for every conversion here on a loaded 2-core machine.
const JOB_WAIT: Duration = Duration::from_secs(120);

struct Studio {
    mesh: Mesh,
    user: User,
    dir: TempDir,
    _converter: Running<converter::App>,
}

impl Studio {
    async fn start() -> Self {
        let mesh = Mesh::start(MeshOptions::default()).await;
        let mut config = mesh.converter_config();
        config.concurrency = 2;
        let converter = Running::start(config).await.unwrap();
        let user = mesh.user("listener@example.com").await;
        Self {
            mesh,
            user,
            dir: temp_dir(),
            _converter: converter,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Uploads `source` as `name` with `options` in the query; the 202's JSON.
    async fn upload(&self, source: &Path, name: &str, options: &[(&str, &str)]) -> Value {
        let bytes = tokio::fs::read(source).await.unwrap();
        let response = self
            .mesh
            .upload_with_options(&self.user.token, name, bytes, options, &[])
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{options:?}: {body}");
        body
    }

    /// The job as `GET /jobs/{id}` shows it once it ended.
    async fn ended(&self, job_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + JOB_WAIT;
        loop {
            let job = test_support::rest::job(
                &self.mesh.http,
                &self.mesh.url(""),
                &self.user.token,
                job_id,
            )
            .await;
            if matches!(job["status"].as_str(), Some("done" | "failed")) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ended: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Converts `source` with `options` and downloads the result; the job, the response's
    /// Content-Type and file name, and the file.
    async fn convert(&self, source: &Path, name: &str, options: &[(&str, &str)]) -> Converted {
        let accepted = self.upload(source, name, options).await;
        self.download(accepted["job_id"].as_str().unwrap()).await
    }

    async fn download(&self, job_id: &str) -> Converted {
        let job = self.ended(job_id).await;
        assert_eq!(job["status"], "done", "{job}");
        let response = self
            .mesh
            .http
            .get(self.mesh.url(job["download_url"].as_str().unwrap()))
            .bearer_auth(&self.user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let content_type = header("content-type");
        let disposition = header("content-disposition");
        let path = self.path(&format!("{job_id}.out"));
        tokio::fs::write(&path, response.bytes().await.unwrap())
            .await
            .unwrap();
        Converted {
            job,
            content_type,
            disposition,
            path,
        }
    }
}

struct Converted {
    job: Value,
    content_type: String,
    disposition: String,
    path: PathBuf,
}

impl Converted {
    /// What mutagen reads; the first picture's bytes go to `picture` when given.
    async fn mutagen(&self, picture: Option<&Path>) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/read_audio.py");
        let mut command = tokio::process::Command::new("python3");
        command.arg(script).arg(&self.path);
        if let Some(picture) = picture {
            command.arg(picture);
        }
        let output = command.output().await.expect("python3 runs");
        assert!(
            output.status.success(),
            "mutagen could not read the file (is the test venv on PATH?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// A video with sound and its own tags: `seconds` of a moving test picture, a key frame every
/// half second (so the cover's search is cheap and precise).
async fn tagged_video(path: &Path, seconds: u32) {
    let length = seconds.to_string();
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &length,
            "-g",
            "5",
            "-pix_fmt",
            "yuv420p",
            "-shortest",
            "-metadata",
            "title=Source title",
            "-metadata",
            "artist=Source artist",
        ],
        path,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn every_format_is_made_with_its_codec_tags_and_cover_as_third_party_readers_see_them() {
    let studio = Studio::start().await;
    let source = studio.path("talk.mp4");
    tagged_video(&source, 4).await;
    let tags = [
        ("artist", "Someone Else"),
        ("album", "An album"),
        ("year", "2024"),
        ("track", "3/12"),
        ("genre", "Speech"),
        ("comment", "made in a test"),
    ];
    let formats = [
        ("mp3", "mp3", "MP3", "audio/mpeg"),
        ("m4a", "aac", "MP4", "audio/mp4"),
        ("opus", "opus", "OggOpus", "audio/ogg"),
        ("flac", "flac", "FLAC", "audio/flac"),
    ];
    let mut jobs = Vec::new();
    for (format, ..) in formats {
        let mut options = vec![("format", format)];
        options.extend(tags);
        let accepted = studio.upload(&source, "talk.mp4", &options).await;
        assert_eq!(accepted["options"]["format"], format, "{accepted}");
        jobs.push(accepted["job_id"].as_str().unwrap().to_owned());
    }
    for ((format, codec, kind, content_type), job_id) in formats.into_iter().zip(jobs) {
        let converted = studio.download(&job_id).await;
        assert_eq!(converted.content_type, content_type, "{format}");
        assert!(
            converted
                .disposition
                .contains(&format!("filename=\"talk.{format}\"")),
            "{format}: {}",
            converted.disposition
        );
        assert_eq!(
            ffprobe_audio("stream=codec_name", &converted.path)
                .await
                .unwrap(),
            codec,
            "{format}"
        );
        let picture = studio.path(&format!("cover-{format}.jpg"));
        let read = converted.mutagen(Some(&picture)).await;
        assert_eq!(read["kind"], kind, "{format}: {read}");
        // The source's title is carried over; every tag the job gave is there.
        assert_eq!(read["tags"]["title"], "Source title", "{format}: {read}");
        for (name, value) in tags {
            assert_eq!(read["tags"][name], value, "{format} {name}: {read}");
        }
        let pictures = read["pictures"].as_array().unwrap();
        assert_eq!(pictures.len(), 1, "{format}: {read}");
        assert_eq!(pictures[0]["mime"], "image/jpeg", "{format}: {read}");
        assert_eq!(pictures[0]["type"], 3, "a front cover ({format}): {read}");
        let size = test_support::media::ffprobe_picture_size(&picture)
            .await
            .unwrap();
        assert_eq!(
            size,
            (320, 240),
            "{format}: the frame keeps its size under 600x600"
        );
    }
}

#[tokio::test]
async fn bitrate_mode_rate_channels_trimming_title_and_id3_version_are_as_asked() {
    let studio = Studio::start().await;
    let source = studio.path("holiday.mp4");
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=5",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "6",
            "-pix_fmt",
            "yuv420p",
            "-shortest",
        ],
        &source,
    )
    .await
    .unwrap();

    let cbr = studio
        .convert(
            &source,
            "holiday.mp4",
            &[
                ("bitrate", "64"),
                ("channels", "1"),
                ("sample_rate", "22050"),
                ("start", "1"),
                ("end", "00:00:03.500"),
                ("id3v2", "2.4"),
            ],
        )
        .await;
    let read = cbr.mutagen(None).await;
    assert_eq!(read["bitrate_mode"], "CBR", "{read}");
    assert_eq!(
        (read["sample_rate"].as_u64(), read["channels"].as_u64()),
        (Some(22050), Some(1))
    );
    assert_eq!(
        ffprobe_audio("stream=codec_name,sample_rate,channels", &cbr.path)
            .await
            .unwrap(),
        "mp3,22050,1"
    );
    assert_eq!(read["id3_version"], "2.4", "{read}");
    // No title in the source: the file's name without its extension.
    assert_eq!(read["tags"]["title"], "holiday", "{read}");
    // As a player hears it (the encoder's delay and padding skipped, as the LAME header
    // says); one MP3 frame at 22.05 kHz is 52 ms.
    let seconds = decoded_seconds(&cbr.path).await.unwrap();
    assert!((seconds - 2.5).abs() <= 0.053, "trimmed to {seconds} s");
    assert_eq!(cbr.job["options"]["start_ms"], 1000, "{}", cbr.job);

    let vbr = studio
        .convert(
            &source,
            "holiday.mp4",
            &[("quality", "5"), ("title", "My title")],
        )
        .await;
    let read = vbr.mutagen(None).await;
    assert_eq!(read["bitrate_mode"], "VBR", "{read}");
    assert_eq!(read["id3_version"], "2.3", "the default: {read}");
    assert_eq!(read["tags"]["title"], "My title", "{read}");
    let seconds = decoded_seconds(&vbr.path).await.unwrap();
    assert!((seconds - 6.0).abs() <= 0.027, "untrimmed: {seconds} s");

    let opus = studio
        .convert(
            &source,
            "holiday.mp4",
            &[("format", "opus"), ("bitrate", "24"), ("channels", "2")],
        )
        .await;
    assert_eq!(
        ffprobe_audio("stream=codec_name,channels", &opus.path)
            .await
            .unwrap(),
        "opus,2"
    );
}

/// A tone at `amplitude` (a quiet or a loud source) under a still picture.
async fn tone(path: &Path, expression: &str) {
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=gray:size=64x48:rate=2",
            "-f",
            "lavfi",
            "-i",
            expression,
            "-t",
            "12",
            "-pix_fmt",
            "yuv420p",
            "-shortest",
        ],
        path,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn normalised_loudness_lands_within_one_lu_of_the_target_under_the_true_peak_ceiling() {
    let studio = Studio::start().await;
    let quiet = studio.path("quiet.mp4");
    tone(&quiet, "sine=frequency=330:sample_rate=48000,volume=0.02").await;
    let loud = studio.path("loud.mp4");
    tone(&loud, "anoisesrc=color=white:amplitude=1:sample_rate=48000").await;

    // A tone with a short loud click every two seconds (a crest of some 24 dB, like speech
    // with plosives): the gain that brings it to the target would take the clicks over the
    // ceiling, so the true-peak limit has work to do.
    let spiky = studio.path("spiky.mp4");
    tone(
        &spiky,
        "aevalsrc=0.1*sin(2*PI*330*t)+if(lt(mod(t\\,2)\\,0.001)\\,0.9\\,0):s=48000",
    )
    .await;

    for source in [&quiet, &loud, &spiky] {
        let (raw, raw_peak) = ebur128_loudness(source).await.unwrap();
        // The checks below can fail: untouched, no source is near -16 LUFS under -1.5 dBTP.
        assert!(
            (raw + 16.0).abs() > 5.0 || raw_peak > -1.5,
            "{source:?}: {raw} LUFS"
        );
        for (options, target, ceiling) in [
            (vec![("normalize", "true")], -16.0, -1.5),
            (
                vec![("normalize", "-23"), ("true_peak", "-3"), ("format", "m4a")],
                -23.0,
                -3.0,
            ),
        ] {
            let converted = studio.convert(source, "tone.mp4", &options).await;
            let (integrated, peak) = ebur128_loudness(&converted.path).await.unwrap();
            eprintln!("{source:?} {raw} LUFS, {options:?}: {integrated} LUFS, {peak} dBTP");
            assert!(
                (integrated - target).abs() <= 1.0,
                "{source:?} {options:?}: {integrated} LUFS, target {target}"
            );
            assert!(
                peak <= ceiling,
                "{source:?} {options:?}: true peak {peak} dBTP over {ceiling}"
            );
        }
    }
}

#[tokio::test]
async fn a_clip_too_short_to_measure_is_still_normalised_under_the_ceiling() {
    let studio = Studio::start().await;
    let blip = studio.path("blip.mp4");
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=gray:size=64x48:rate=2",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=48000,volume=0.9",
            "-t",
            "0.8",
            "-pix_fmt",
            "yuv420p",
            "-shortest",
        ],
        &blip,
    )
    .await
    .unwrap();
    let converted = studio
        .convert(&blip, "blip.mp4", &[("normalize", "true")])
        .await;
    let (integrated, peak) = ebur128_loudness(&converted.path).await.unwrap();
    eprintln!("0.8 s clip: {integrated} LUFS, {peak} dBTP");
    assert!(peak <= -1.5, "true peak {peak} dBTP");
    assert!(decoded_seconds(&converted.path).await.unwrap() > 0.7);
}

/// The grey pixels of a picture, 32×32, and their mean.
async fn thumbnail(input_args: &[&str]) -> (Vec<u8>, f64) {
    let pixels = gray_pixels(input_args, 32).await.unwrap();
    let mean = pixels.iter().map(|&p| f64::from(p)).sum::<f64>() / pixels.len() as f64;
    (pixels, mean)
}

fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[tokio::test]
async fn the_cover_is_a_frame_of_the_video_not_its_black_opening_and_an_audio_file_keeps_its_own() {
    let studio = Studio::start().await;
    let source = studio.path("opening.mp4");
    // Three seconds of black, then a moving picture (its clock and pattern change every frame).
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=black:size=320x240:rate=10:duration=3",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=10:duration=6",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=9",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1:a=0[v]",
            "-map",
            "[v]",
            "-map",
            "2:a",
            "-g",
            "5",
            "-pix_fmt",
            "yuv420p",
        ],
        &source,
    )
    .await
    .unwrap();

    let converted = studio.convert(&source, "opening.mp4", &[]).await;
    let cover = studio.path("cover.jpg");
    let read = converted.mutagen(Some(&cover)).await;
    let description = read["pictures"][0]["desc"].as_str().unwrap().to_owned();
    let at = description
        .strip_prefix("frame at ")
        .unwrap_or_else(|| panic!("the picture says where it is from: {read}"));
    let seconds = clock_seconds(at);
    assert!(seconds >= 3.0, "a frame after the black opening: {at}");

    let cover_path = cover.to_str().unwrap();
    let (cover_pixels, cover_mean) = thumbnail(&["-i", cover_path]).await;
    assert!(
        cover_mean > 40.0,
        "the cover is not black: mean {cover_mean}"
    );
    let source_path = source.to_str().unwrap();
    let same_time = format!("{seconds:.3}");
    let (frame, _) = thumbnail(&["-ss", &same_time, "-i", source_path]).await;
    let other_time = format!(
        "{:.3}",
        if seconds > 5.0 {
            seconds - 1.5
        } else {
            seconds + 1.5
        }
    );
    let (other, _) = thumbnail(&["-ss", &other_time, "-i", source_path]).await;
    let (same, different) = (
        mean_difference(&cover_pixels, &frame),
        mean_difference(&cover_pixels, &other),
    );
    eprintln!("cover at {at}: difference {same} from that frame, {different} from one 1.5 s away");
    assert!(
        same < 6.0,
        "the cover is the frame at {at}: mean difference {same}"
    );
    // The comparison can tell frames apart: the one 1.5 s away differs by far more.
    assert!(
        different > 2.0 * same + 4.0,
        "same {same}, 1.5 s away {different}"
    );

    let without = studio
        .convert(&source, "opening.mp4", &[("cover", "none")])
        .await;
    let read = without.mutagen(None).await;
    assert_eq!(read["pictures"], serde_json::json!([]), "{read}");

    // An audio file with a red cover of its own keeps that cover.
    let red = studio.path("red.jpg");
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=red:size=300x300",
            "-frames:v",
            "1",
        ],
        &red,
    )
    .await
    .unwrap();
    let song = studio.path("song.mp3");
    ffmpeg_generate(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
            "-i",
            red.to_str().unwrap(),
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-c:v",
            "copy",
            "-id3v2_version",
            "3",
            "-disposition:v",
            "attached_pic",
            "-metadata:s:v",
            "comment=Cover (front)",
        ],
        &song,
    )
    .await
    .unwrap();
    let kept = studio
        .convert(&song, "song.mp3", &[("format", "m4a")])
        .await;
    let kept_cover = studio.path("kept.jpg");
    let read = kept.mutagen(Some(&kept_cover)).await;
    assert_eq!(read["pictures"].as_array().map(Vec::len), Some(1), "{read}");
    let rgb = test_support::media::mean_rgb(&kept_cover).await.unwrap();
    assert!(
        rgb.0 > 180 && rgb.1 < 80 && rgb.2 < 80,
        "the source's red cover: {rgb:?}"
    );
}

fn clock_seconds(clock: &str) -> f64 {
    let parts: Vec<f64> = clock.split(':').map(|part| part.parse().unwrap()).collect();
    parts.iter().fold(0.0, |total, part| total * 60.0 + part)
}

#[tokio::test]
async fn bad_options_are_refused_with_a_400_naming_them_and_nothing_is_stored() {
    let studio = Studio::start().await;
    let source = studio.path("clip.mp4");
    tagged_video(&source, 2).await;
    let bytes = tokio::fs::read(&source).await.unwrap();
    let huge_title = "t".repeat(5 * 1024 * 1024);
    // (the option named, the query, the multipart fields)
    let cases: Vec<(&str, Pairs, Pairs)> = vec![
        ("format", vec![("format", "wav")], vec![]),
        ("bitrate", vec![("bitrate", "7")], vec![]),
        ("end", vec![("start", "10"), ("end", "5")], vec![]),
        ("start", vec![("start", "soon")], vec![]),
        ("preset", vec![("preset", "loud")], vec![]),
        ("colour", vec![("colour", "red")], vec![]),
        (
            "sample_rate",
            vec![("format", "opus")],
            vec![("sample_rate", "44100")],
        ),
        ("title", vec![], vec![("title", &huge_title)]),
        ("title", vec![("title", "a")], vec![("title", "b")]),
        // An MP4's duration shows as it streams (its `mvhd`), so the gateway refuses this too.
        ("start", vec![("start", "30")], vec![]),
    ];
    for (option, query, fields) in cases {
        let response = studio
            .mesh
            .upload_with_options(
                &studio.user.token,
                "clip.mp4",
                bytes.clone(),
                &query,
                &fields,
            )
            .await;
        assert_eq!(response.status(), 400, "{option}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("`{option}`")), "{option}: {body}");
    }
    // An option after the file part comes too late to apply: refused, and the file not kept.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("clip.mp4"),
        )
        .text("format", "opus");
    let response = studio
        .mesh
        .http
        .post(studio.mesh.url("/upload"))
        .bearer_auth(&studio.user.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body.to_string().contains("before the file"), "{body}");
    assert!(studio.mesh.stored_videos(&studio.user.id).await.is_empty());
    assert!(studio.mesh.stored_jobs(&studio.user.id).await.is_empty());

    // Matroska says its duration in its `Info`: refused at the gateway as well.
    let matroska = studio.path("clip.mkv");
    ffmpeg_generate(&["-i", source.to_str().unwrap(), "-c", "copy"], &matroska)
        .await
        .unwrap();
    let response = studio
        .mesh
        .upload_with_options(
            &studio.user.token,
            "clip.mkv",
            tokio::fs::read(&matroska).await.unwrap(),
            &[("start", "30")],
            &[],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(studio.mesh.stored_videos(&studio.user.id).await.is_empty());

    // In a container whose duration the gateway does not read (MPEG-TS here), the converter
    // refuses it from ffmpeg's reading: the job fails, saying so, and no audio file is kept.
    let transport = studio.path("clip.ts");
    ffmpeg_generate(&["-i", source.to_str().unwrap(), "-c", "copy"], &transport)
        .await
        .unwrap();
    let accepted = studio
        .upload(&transport, "clip.ts", &[("start", "30")])
        .await;
    let job = studio.ended(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("`start`") && error.contains("past the end"),
        "{error}"
    );
    assert!(
        studio
            .mesh
            .stored_files(proto::storage::v1::Bucket::Mp3s, &studio.user.id)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn presets_are_listed_and_a_preset_job_is_made_shown_and_mailed_in_its_format() {
    let studio = Studio::start().await;
    let presets: Value = studio
        .mesh
        .http
        .get(studio.mesh.url("/presets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = presets["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|preset| preset["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["music", "podcast", "voice", "archive"]);

    let smtp = SmtpCapture::start().unwrap();
    let mut notifier_config = studio.mesh.notifier_config(&smtp.url());
    notifier_config.concurrency = 1;
    let _notifier = Running::<notifier::App>::start(notifier_config)
        .await
        .unwrap();
    let source = studio.path("lecture.mp4");
    tagged_video(&source, 5).await;
    let accepted = studio
        .upload(
            &source,
            "lecture.mp4",
            &[("preset", "voice"), ("bitrate", "16")],
        )
        .await;
    let options = &accepted["options"];
    assert_eq!(options["preset"], "voice");
    assert_eq!(options["format"], "opus");
    assert_eq!(options["channels"], 1);
    assert_eq!(
        options["bitrate"], 16,
        "explicit options override the preset's"
    );
    assert_eq!(options["normalize"]["target_lufs"], -16.0);
    let converted = studio.download(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(
        converted.job["options"], *options,
        "the job keeps its options"
    );
    assert_eq!(converted.content_type, "audio/ogg");
    assert_eq!(
        ffprobe_audio("stream=codec_name,channels", &converted.path)
            .await
            .unwrap(),
        "opus,1"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    let text = mails[0].text();
    assert!(text.contains("Your Opus of lecture.mp4 is ready"), "{text}");
}
