//! Uploads that survive a dropped connection, a crash or Ctrl-C: the CLI speaks tus 1.0 to the
//! gateway's `/files/`. The upload's URL is kept beside the login (`uploads.json`, 0600) from
//! the moment the upload exists, so `mp3converter upload FILE` run again for the same file
//! (same path, size and modification time, same gateway and options) asks the gateway where
//! it stopped and sends only the rest. Network errors and a briefly unavailable gateway are
//! tried again with a growing pause, each time from the offset the gateway reports.

use crate::api::{Api, ApiError};
use crate::session::write_private;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::TryStreamExt;
use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The file the unfinished uploads' URLs are kept in, beside the login.
const RECORDS_FILE: &str = "uploads.json";
/// The protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// Bytes per PATCH: the gateway keeps what arrives even if a PATCH breaks, so a PATCH can be
/// long; a new one now and then lets a stalled connection show sooner.
const PATCH_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes read from disk at a time.
const READ_BYTES: usize = 256 * 1024;
/// Failed attempts in a row (with no byte gained between them) before the upload gives up;
/// the upload stays resumable.
const MAX_FAILURES_IN_A_ROW: u32 = 6;
/// The pause after the first failure; it doubles after each, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// What identifies a file's upload: the same file (path, size, modification time) to the same
/// gateway with the same options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileKey {
    gateway: String,
    file: PathBuf,
    size: u64,
    modified_ns: u128,
    options: Vec<(String, String)>,
}

impl FileKey {
    fn of(gateway: &str, path: &Path, options: &[(&str, &str)]) -> Result<Self, ApiError> {
        let reading = || format!("reading {}", path.display());
        let file = std::fs::canonicalize(path).map_err(ApiError::file(reading()))?;
        let metadata = std::fs::metadata(&file).map_err(ApiError::file(reading()))?;
        let modified_ns = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        Ok(Self {
            gateway: gateway.to_owned(),
            file,
            size: metadata.len(),
            modified_ns,
            options: options
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        })
    }
}

/// One unfinished upload: the file, and where its upload lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: FileKey,
    url: String,
}

/// The unfinished uploads kept in the config directory.
#[derive(Debug, Clone)]
pub struct UploadRecords {
    dir: PathBuf,
}

impl UploadRecords {
    /// The records in `dir` (the login's directory).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(RECORDS_FILE)
    }

    fn load(&self) -> Vec<Record> {
        // A damaged file only loses the chance to resume: the upload starts again.
        std::fs::read(self.path())
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .unwrap_or_default()
    }

    fn store(&self, records: &[Record]) -> Result<(), ApiError> {
        let json = serde_json::to_vec_pretty(records)
            .map_err(|error| ApiError::Unexpected(error.to_string()))?;
        write_private(&self.dir, RECORDS_FILE, &json)
            .map_err(ApiError::file(format!("saving {}", self.path().display())))?;
        Ok(())
    }

    fn find(&self, key: &FileKey) -> Option<String> {
        self.load()
            .into_iter()
            .find(|record| &record.key == key)
            .map(|record| record.url)
    }

    fn remember(&self, key: &FileKey, url: &str) -> Result<(), ApiError> {
        let mut records = self.load();
        records.retain(|record| &record.key != key);
        records.push(Record {
            key: key.clone(),
            url: url.to_owned(),
        });
        self.store(&records)
    }

    fn forget(&self, key: &FileKey) {
        let mut records = self.load();
        let before = records.len();
        records.retain(|record| &record.key != key);
        if records.len() != before {
            let _ = self.store(&records);
        }
    }
}

/// Where an upload stands after a step.
enum Step {
    /// More bytes to send, from this offset.
    At(u64),
    /// Every byte is in: the job it became.
    Done(String),
}

impl Api {
    /// Uploads `path` with tus (resuming an upload of the same file that stopped), with
    /// `options` in its metadata; `progress` shows the bytes the gateway holds. The answer:
    /// `{job_id, status_url, upload_url}`.
    pub async fn upload(
        &self,
        path: &Path,
        options: &[(&str, &str)],
        progress: &ProgressBar,
        records: &UploadRecords,
    ) -> Result<Value, ApiError> {
        let key = FileKey::of(self.base(), path, options)?;
        progress.set_length(key.size);
        let mut url = records.find(&key);
        if let Some(url) = &url {
            progress.suspend(|| eprintln!("resuming the upload of {} ({url})", path.display()));
        }
        let creation_key = uuid::Uuid::new_v4().to_string();
        let mut failures = 0;
        let mut pause = FIRST_PAUSE;
        let mut best = 0;
        loop {
            let step = match &url {
                None => match self.create(path, &key, &creation_key).await {
                    Ok(created) => {
                        records.remember(&key, &created)?;
                        url = Some(created);
                        continue;
                    }
                    Err(error) => Err(error),
                },
                Some(location) => self.step(location, path, &key, progress).await,
            };
            let error = match step {
                Ok(Step::Done(job_id)) => {
                    records.forget(&key);
                    return Ok(json!({
                        "job_id": job_id,
                        "status_url": format!("/jobs/{job_id}"),
                        "upload_url": url,
                    }));
                }
                Ok(Step::At(offset)) => {
                    if offset > best {
                        best = offset;
                        failures = 0;
                        pause = FIRST_PAUSE;
                    }
                    continue;
                }
                Err(error) => error,
            };
            match &error {
                // Gone (removed, or expired): start again from nothing.
                ApiError::Refused { status, .. }
                    if *status == StatusCode::NOT_FOUND || *status == StatusCode::GONE =>
                {
                    records.forget(&key);
                    if url.take().is_some() {
                        progress.set_position(0);
                        continue;
                    }
                    return Err(error);
                }
                ApiError::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                    // Kept: after logging in again, the same command goes on from here.
                    return Err(error);
                }
                error if error.is_passing() && failures < MAX_FAILURES_IN_A_ROW => {
                    failures += 1;
                    progress.suspend(|| {
                        eprintln!(
                            "upload attempt {failures} failed ({error}); trying again in {pause:?}"
                        );
                    });
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                ApiError::Refused { .. } => {
                    records.forget(&key);
                    return Err(error);
                }
                _ => return Err(error),
            }
        }
    }

    /// `POST /files`: the new upload's URL.
    async fn create(
        &self,
        path: &Path,
        key: &FileKey,
        creation_key: &str,
    ) -> Result<String, ApiError> {
        let name = path.file_name().map_or_else(
            || "upload".into(),
            |name| name.to_string_lossy().into_owned(),
        );
        let metadata = [
            ("filename", name.as_str()),
            ("filetype", crate::api::media_type(path)),
        ]
        .into_iter()
        .chain(
            key.options
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
        .map(|(name, value)| format!("{name} {}", BASE64.encode(value)))
        .collect::<Vec<_>>()
        .join(",");
        let request = self
            .authorized(self.http().post(self.url("/files/")))
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Length", key.size)
            .header("Upload-Metadata", metadata)
            .header("Idempotency-Key", creation_key);
        let response = self.send(request).await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::Unexpected("the new upload has no Location".into()))?;
        // The gateway answers with a relative URL unless it knows its public one.
        Ok(match reqwest::Url::parse(location) {
            Ok(absolute) => absolute.into(),
            Err(_) => self.url(location),
        })
    }

    /// Asks where the upload at `url` stands, then sends the next PATCH of bytes from there.
    async fn step(
        &self,
        url: &str,
        path: &Path,
        key: &FileKey,
        progress: &ProgressBar,
    ) -> Result<Step, ApiError> {
        let status = self
            .send(
                self.authorized(self.http().head(url))
                    .header("Tus-Resumable", TUS_VERSION),
            )
            .await?;
        if let Some(job_id) = job_id(&status) {
            progress.set_position(key.size);
            return Ok(Step::Done(job_id));
        }
        let offset = upload_offset(&status)?;
        progress.set_position(offset);
        let length = (key.size - offset).min(PATCH_BYTES);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(ApiError::file(format!("opening {}", path.display())))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(ApiError::file(format!("reading {}", path.display())))?;
        let counted = progress.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(length), READ_BYTES)
            .inspect_ok(move |chunk| counted.inc(chunk.len() as u64));
        let request = self
            .authorized(self.http().patch(url))
            .header("Tus-Resumable", TUS_VERSION)
            .header("Upload-Offset", offset)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/offset+octet-stream",
            )
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body));
        let response = self.send(request).await?;
        Ok(match job_id(&response) {
            Some(job_id) => Step::Done(job_id),
            None => Step::At(upload_offset(&response)?),
        })
    }
}

fn job_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("job-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn upload_offset(response: &reqwest::Response) -> Result<u64, ApiError> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| ApiError::Unexpected("no Upload-Offset in the answer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_remembered_privately_until_it_is_forgotten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("clip.mp4");
        std::fs::write(&video, b"bytes").unwrap();
        let records = UploadRecords::in_dir(&dir.path().join("config"));
        let key = FileKey::of("http://gateway", &video, &[("format", "m4a")]).unwrap();
        assert_eq!(records.find(&key), None);
        records.remember(&key, "http://gateway/files/1").unwrap();
        assert_eq!(
            records.find(&key).as_deref(),
            Some("http://gateway/files/1")
        );
        let mode = std::fs::metadata(records.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Another gateway, other options, or a changed file is another upload.
        let elsewhere = FileKey::of("http://other", &video, &[("format", "m4a")]).unwrap();
        let plain = FileKey::of("http://gateway", &video, &[]).unwrap();
        std::fs::write(&video, b"other bytes").unwrap();
        let changed = FileKey::of("http://gateway", &video, &[("format", "m4a")]).unwrap();
        for other in [elsewhere, plain, changed] {
            assert_eq!(records.find(&other), None, "{other:?}");
        }
        records.forget(&key);
        assert_eq!(records.find(&key), None);
    }
}
