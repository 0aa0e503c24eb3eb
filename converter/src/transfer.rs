//! Moving bytes between the storage service and the job's temporary files, streamed both ways
//! in chunks, so a converter's memory does not grow with the file; and, where storage keeps a
//! video as a file this process can read (storage on this machine, on its local directory: the
//! embedded defaults), reading it there instead, as HDFS's short-circuit reads do: streaming
//! it would cost storage and the converter about a tenth of what ffmpeg spends on the job
//! (reading, sending, receiving and writing every byte once more).

use crate::error::ConversionError;
use audio_options::Format;
use bytes::BytesMut;
use clients::{Owner, StorageClient};
use futures::StreamExt;
use proto::storage::v1 as pb;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Bytes per upload message.
const CHUNK_BYTES: usize = 256 * 1024;

/// Where a job's video comes from: read where storage keeps it, when that is a file this
/// process can read, else streamed into the job's directory. Once storage answers that it
/// keeps no files (GridFS), later jobs do not ask again; a path that names nothing readable
/// here (storage on another machine) is looked at job by job, a cheap question of storage's
/// local directory.
#[derive(Debug, Clone)]
pub struct VideoFetcher {
    storage: StorageClient,
    in_place_possible: Arc<AtomicBool>,
}

/// A job's video, ready for ffmpeg.
#[derive(Debug, Clone)]
pub struct FetchedVideo {
    /// The file ffmpeg reads: storage's own (never to be written or removed), or the copy in
    /// the job's directory.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether `path` is storage's own file.
    pub in_place: bool,
}

impl VideoFetcher {
    /// Fetches through `storage`, reading in place where it can.
    pub fn new(storage: StorageClient) -> Self {
        Self {
            storage,
            in_place_possible: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The stored video `video_id`: storage's own file where this process can read it, else
    /// streamed to `copy`.
    pub async fn fetch(
        &self,
        video_id: &str,
        copy: &Path,
        cancel: &CancellationToken,
    ) -> Result<FetchedVideo, ConversionError> {
        if self.in_place_possible.load(Ordering::Relaxed) {
            match self.in_place(video_id).await {
                Ok(InPlace::Readable(fetched)) => return Ok(fetched),
                Ok(InPlace::NotKept) => self.in_place_possible.store(false, Ordering::Relaxed),
                Ok(InPlace::OutOfReach) => {}
                // Streaming asks again, and tells a missing video from a passing failure.
                Err(status) => tracing::debug!(%status, "no answer on where the video lies"),
            }
        }
        let size = download_video(&self.storage, video_id, copy, cancel).await?;
        metrics::counter!(crate::meters::VIDEOS_FETCHED, "how" => "streamed").increment(1);
        Ok(FetchedVideo {
            path: copy.to_owned(),
            size,
            in_place: false,
        })
    }

    /// The video as storage keeps it, if that is a file here of the recorded size.
    async fn in_place(&self, video_id: &str) -> Result<InPlace, tonic::Status> {
        let (info, path) = self
            .storage
            .stat_with_local_path(pb::Bucket::Videos, video_id, &Owner::Any)
            .await?;
        let Some(path) = path else {
            return Ok(InPlace::NotKept);
        };
        if !is_readable_file_of(&path, info.size).await {
            tracing::debug!(
                path = %path.display(),
                "storage's file is not readable here (storage on another machine?): streaming"
            );
            return Ok(InPlace::OutOfReach);
        }
        metrics::counter!(crate::meters::VIDEOS_FETCHED, "how" => "in_place").increment(1);
        Ok(InPlace::Readable(FetchedVideo {
            path,
            size: info.size,
            in_place: true,
        }))
    }
}

/// What storage's answer on where a video lies allows.
enum InPlace {
    /// A file this process reads.
    Readable(FetchedVideo),
    /// Storage keeps no files (GridFS).
    NotKept,
    /// A path that names no readable file of the video's size here.
    OutOfReach,
}

/// Whether `path` names a regular file of `size` bytes that this process can open for reading.
async fn is_readable_file_of(path: &Path, size: u64) -> bool {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return false;
    };
    file.metadata()
        .await
        .is_ok_and(|found| found.is_file() && found.len() == size)
}

/// Writes the stored video `video_id` to `path`.
async fn download_video(
    storage: &StorageClient,
    video_id: &str,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<u64, ConversionError> {
    let mut chunks = storage
        .download(pb::Bucket::Videos, video_id, &Owner::Any, 0, None)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => {
                ConversionError::Unconvertible("the uploaded video is no longer stored".into())
            }
            _ => ConversionError::storage("fetching the video", status),
        })?;
    // A std file written on a blocking thread, one hand-off per chunk: tokio's own file would
    // copy every chunk into a buffer of its own first.
    let file = Arc::new(tokio::fs::File::create(path).await?.into_std().await);
    let mut written = 0u64;
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            () = cancel.cancelled() => return Err(ConversionError::Cancelled),
        };
        let Some(chunk) = chunk else { break };
        let chunk =
            chunk.map_err(|status| ConversionError::storage("fetching the video", status))?;
        written += chunk.len() as u64;
        let file = file.clone();
        tokio::task::spawn_blocking(move || (&*file).write_all(&chunk))
            .await
            .map_err(std::io::Error::other)??;
    }
    Ok(written)
}

/// Stores the audio file at `path`, made for `job` in `format`, under `filename` (in the MP3s
/// bucket, which holds every format); returns what storage recorded.
pub async fn upload_audio(
    storage: &StorageClient,
    job: &pb::Job,
    filename: &str,
    format: Format,
    path: &Path,
) -> Result<pb::FileInfo, ConversionError> {
    let mut upload = storage.upload(pb::UploadHeader {
        bucket: pb::Bucket::Mp3s.into(),
        owner_id: job.owner_id.clone(),
        filename: filename.to_owned(),
        content_type: format.content_type().into(),
        job_id: job.id.clone(),
    });
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) => {
            upload.abandon().await;
            return Err(error.into());
        }
    };
    loop {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
        let read = async {
            while chunk.len() < CHUNK_BYTES {
                if file.read_buf(&mut chunk).await? == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(error) = read.await {
            upload.abandon().await;
            return Err(error.into());
        }
        // A refused chunk means storage stopped reading: finishing tells why.
        if chunk.is_empty() || !upload.send(chunk.freeze()).await {
            break;
        }
    }
    upload
        .finish()
        .await
        .map_err(|status| ConversionError::storage("storing the MP3", status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_readable_file_of_the_recorded_size_is_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("video");
        std::fs::write(&video, b"twelve bytes").unwrap();
        assert!(is_readable_file_of(&video, 12).await);
        assert!(!is_readable_file_of(&video, 13).await, "another size");
        assert!(!is_readable_file_of(&dir.path().join("gone"), 12).await);
        let size = std::fs::metadata(dir.path()).unwrap().len();
        assert!(!is_readable_file_of(dir.path(), size).await, "a directory");
    }
}
