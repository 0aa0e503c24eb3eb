//! Moving bytes between the storage service and the job's temporary files, streamed both ways
//! in chunks, so a converter's memory does not grow with the file.

use crate::error::ConversionError;
use bytes::BytesMut;
use futures::StreamExt;
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_client::StorageServiceClient;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Bytes per upload message.
const CHUNK_BYTES: usize = 256 * 1024;
/// Upload messages queued while the previous ones are sent.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Writes the stored video `video_id` to `path`.
pub async fn download_video(
    storage: &StorageServiceClient<Channel>,
    video_id: &str,
    path: &Path,
    cancel: &CancellationToken,
) -> Result<u64, ConversionError> {
    let request = pb::DownloadRequest {
        bucket: pb::Bucket::Videos.into(),
        id: video_id.to_owned(),
        owner_id: String::new(),
        offset: 0,
        length: None,
    };
    let mut stream = storage
        .clone()
        .download(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => {
                ConversionError::Unconvertible("the uploaded video is no longer stored".into())
            }
            _ => ConversionError::storage("fetching the video", &status),
        })?
        .into_inner();
    let mut file = tokio::fs::File::create(path).await?;
    let mut written = 0u64;
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = cancel.cancelled() => return Err(ConversionError::Cancelled),
        };
        let Some(message) = message else { break };
        let message =
            message.map_err(|status| ConversionError::storage("fetching the video", &status))?;
        if let Some(pb::download_response::Content::Chunk(chunk)) = message.content {
            file.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
    }
    file.flush().await?;
    Ok(written)
}

/// Stores the MP3 at `path`, made for `job`, under `filename`; returns what storage recorded.
pub async fn upload_mp3(
    storage: &StorageServiceClient<Channel>,
    job: &pb::Job,
    filename: &str,
    path: &Path,
) -> Result<pb::FileInfo, ConversionError> {
    use pb::upload_request::Content;
    let (messages, outgoing) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let mut client = storage.clone();
    let call = tokio::spawn(async move { client.upload(ReceiverStream::new(outgoing)).await });
    let header = pb::UploadHeader {
        bucket: pb::Bucket::Mp3s.into(),
        owner_id: job.owner_id.clone(),
        filename: filename.to_owned(),
        content_type: "audio/mpeg".into(),
        job_id: job.id.clone(),
    };
    let sent = async {
        let send = async |content| {
            messages
                .send(pb::UploadRequest {
                    content: Some(content),
                })
                .await
                .is_ok()
        };
        if !send(Content::Header(header)).await {
            return Ok(false);
        }
        let mut file = tokio::fs::File::open(path).await?;
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
            while chunk.len() < CHUNK_BYTES {
                if file.read_buf(&mut chunk).await? == 0 {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            if !send(Content::Chunk(chunk.freeze())).await {
                return Ok(false);
            }
        }
        Ok::<_, std::io::Error>(send(Content::Finish(pb::UploadFinish {})).await)
    }
    .await;
    // Closing the stream: after `finish` storage keeps the file, without it storage drops it.
    drop(messages);
    let stored = call
        .await
        .map_err(|error| ConversionError::Transient(format!("upload task: {error}")))?
        .map_err(|status| ConversionError::storage("storing the MP3", &status));
    match (sent, stored) {
        (Err(error), _) => Err(error.into()),
        (Ok(_), Err(error)) => Err(error),
        (Ok(false), Ok(_)) => Err(ConversionError::Transient(
            "storage answered before the MP3 was sent".into(),
        )),
        (Ok(true), Ok(response)) => response
            .into_inner()
            .file
            .ok_or_else(|| ConversionError::Transient("storage answered without a file".into())),
    }
}
