//! Moving bytes between the storage service and the job's temporary files, streamed both ways
//! in chunks, so a converter's memory does not grow with the file.

use crate::error::ConversionError;
use audio_options::Format;
use bytes::BytesMut;
use clients::{Owner, StorageClient};
use futures::StreamExt;
use proto::storage::v1 as pb;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// Bytes per upload message.
const CHUNK_BYTES: usize = 256 * 1024;

/// Writes the stored video `video_id` to `path`.
pub async fn download_video(
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
