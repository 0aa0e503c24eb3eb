//! One "video uploaded" event, start to end: claim the job, convert, store the MP3, mark the job
//! done and announce it, and only then let the message go. Each step is safe to repeat, so a
//! redelivered message (a worker died, the broker dropped a connection) finishes the job
//! instead of doing it twice:
//!
//! - a job that is already DONE or FAILED is only announced again if the user was not told yet
//!   (the notifier ignores a second announcement of a notified job);
//! - a job left CONVERTING by a dead worker is taken over with a new claim, which fences the old
//!   worker off: its later updates are refused, and it deletes the MP3 it may have made.

use crate::error::ConversionError;
use crate::media::{Conversion, Tools};
use crate::transfer::{self, FetchedVideo, VideoFetcher};
use audio_options::AudioOptions;
use clients::{Owner, StorageClient};
use messaging::events::{ConversionFailed, ConversionSucceeded, Payload, VideoUploaded};
use messaging::{Handler, Outcome, Received};
use proto::storage::v1 as pb;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::Code;
use tracing::Instrument;

/// The least time between two progress updates of one job.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Times a claim is tried again when the job changed under it.
const CLAIM_ATTEMPTS: usize = 3;

/// Jobs a converter holds beyond those it converts: each fetches its video (and claims its
/// job) while the others convert, so when a conversion ends the next one starts at once
/// instead of after a fetch, and the cores stay busy with ffmpeg.
pub const JOBS_IN_HAND_AHEAD: u16 = 1;

/// The converter's handler of the video queue.
#[derive(Debug, Clone)]
pub struct Converter {
    storage: StorageClient,
    videos: VideoFetcher,
    tools: Tools,
    work_dir: PathBuf,
    /// One permit per ffmpeg allowed to run at once (the configured concurrency); the queue
    /// hands this converter [`JOBS_IN_HAND_AHEAD`] more jobs than that.
    conversions: Arc<Semaphore>,
}

/// What claiming a job found.
enum Claim {
    /// This worker owns the job now (its `attempts` is the claim).
    Claimed(pb::Job),
    /// The job had already ended.
    Finished(pb::Job),
    /// The job was deleted.
    Gone,
}

impl Handler for Converter {
    async fn handle(&self, received: Received) -> Outcome {
        let Some(Payload::VideoUploaded(uploaded)) = received.event.payload.clone() else {
            return Outcome::DeadLetter("the video queue carries only VideoUploaded events".into());
        };
        let span = tracing::info_span!(
            "conversion",
            job_id = %uploaded.job_id,
            attempt = received.attempt,
            redelivered = received.redelivered
        );
        self.run(uploaded, received).instrument(span).await
    }
}

impl Converter {
    /// A converter storing through `storage`, running up to `concurrency` conversions with
    /// `tools` at once in `work_dir`, and announcing outcomes to every channel. Its consumer
    /// should hand it `concurrency` + [`JOBS_IN_HAND_AHEAD`] messages at once.
    pub fn new(storage: StorageClient, tools: Tools, work_dir: PathBuf, concurrency: u16) -> Self {
        Self {
            videos: VideoFetcher::new(storage.clone()),
            storage,
            tools,
            work_dir,
            conversions: Arc::new(Semaphore::new(usize::from(concurrency.max(1)))),
        }
    }

    async fn run(&self, uploaded: VideoUploaded, received: Received) -> Outcome {
        // The video is fetched while the job is claimed: two round trips to storage that do
        // not depend on each other. If the claim finds nothing to do, the fetch is dropped.
        let prefetch = match self.prefetch(&uploaded.video_id, &received.cancel) {
            Ok(prefetch) => prefetch,
            Err(error) => return Outcome::Retry(error.report()),
        };
        let stage = Instant::now();
        let claimed = self.claim(&uploaded.job_id).await;
        record_stage("claim", stage);
        let job = match claimed {
            Ok(Claim::Claimed(job)) => job,
            Ok(Claim::Finished(job)) => {
                tracing::info!(state = ?job.state(), "job already ended");
                return self.announce(&job, &received).await;
            }
            Ok(Claim::Gone) => {
                tracing::info!("job was deleted; nothing to do");
                return Outcome::Ack;
            }
            Err(error) => return Outcome::Retry(error.report()),
        };
        tracing::info!(claim = job.attempts, "converting");
        metrics::counter!(crate::meters::JOBS_STARTED).increment(1);
        let started = Instant::now();
        match self.convert(&job, prefetch, &received.cancel).await {
            Ok(mp3) => {
                let stage = Instant::now();
                let outcome = self.finish(&job, mp3, &received).await;
                record_stage("finish", stage);
                if outcome == Outcome::Ack {
                    metrics::histogram!(crate::meters::CONVERSION_DURATION)
                        .record(started.elapsed().as_secs_f64());
                }
                outcome
            }
            Err(error) => self.give_up_or_retry(&job, error, &received).await,
        }
    }

    /// Takes the job: QUEUED → CONVERTING, or CONVERTING → CONVERTING (taking over from a
    /// worker that went away; its message came back because its connection closed).
    async fn claim(&self, job_id: &str) -> Result<Claim, ConversionError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let job = match self.storage.job(job_id, &Owner::Any).await {
                Ok(job) => job,
                Err(status) if status.code() == Code::NotFound => return Ok(Claim::Gone),
                Err(status) => return Err(ConversionError::storage("reading the job", status)),
            };
            let from = match job.state() {
                pb::JobState::Queued => pb::JobState::Queued,
                pb::JobState::Converting => {
                    tracing::warn!(
                        previous_claim = job.attempts,
                        "job was left converting; taking it over"
                    );
                    pb::JobState::Converting
                }
                pb::JobState::Done | pb::JobState::Failed => return Ok(Claim::Finished(job)),
                pb::JobState::Unspecified => {
                    return Err(ConversionError::transient("job has no state"));
                }
            };
            let claimed = self.storage.claim(&job, from).await;
            match claimed {
                Ok(job) => return Ok(Claim::Claimed(job)),
                // Someone changed the job in between: look again.
                Err(status) if status.code() == Code::FailedPrecondition => continue,
                Err(status) if status.code() == Code::NotFound => return Ok(Claim::Gone),
                Err(status) => return Err(ConversionError::storage("claiming the job", status)),
            }
        }
        Err(ConversionError::transient(
            "the job kept changing while it was claimed",
        ))
    }

    /// Makes the job's temporary directory and starts fetching `video_id` (into it, unless it
    /// is read where storage keeps it).
    fn prefetch(
        &self,
        video_id: &str,
        cancel: &CancellationToken,
    ) -> Result<Prefetch, ConversionError> {
        let workspace = tempfile::Builder::new()
            .prefix("mp3converter-job-")
            .tempdir_in(&self.work_dir)?;
        let copy = workspace.path().join("input");
        let fetch = {
            let (videos, video_id, copy, cancel) = (
                self.videos.clone(),
                video_id.to_owned(),
                copy.clone(),
                cancel.clone(),
            );
            async move {
                let stage = Instant::now();
                let fetched = videos.fetch(&video_id, &copy, &cancel).await;
                record_stage("fetch", stage);
                fetched
            }
        };
        Ok(Prefetch {
            video_id: video_id.to_owned(),
            copy,
            fetch: AbortOnDropHandle::new(tokio::spawn(fetch.in_current_span())),
            workspace,
        })
    }

    /// Finishes fetching the video, checks it, converts it and stores the MP3. The job's
    /// temporary directory goes when this returns, whatever happened.
    async fn convert(
        &self,
        job: &pb::Job,
        prefetch: Prefetch,
        cancel: &CancellationToken,
    ) -> Result<pb::FileInfo, ConversionError> {
        let Prefetch {
            video_id,
            copy,
            fetch,
            workspace,
        } = prefetch;
        let fetched = fetch
            .await
            .map_err(|error| ConversionError::transient_because("fetching the video", error))??;
        // The event and the job name the same video; a job that says otherwise wins.
        let FetchedVideo {
            path: input,
            size,
            in_place,
        } = if video_id == job.video_id {
            fetched
        } else {
            self.videos.fetch(&job.video_id, &copy, cancel).await?
        };
        tracing::debug!(size, in_place, "video fetched");
        // Storage checked them when it recorded the job; a job it cannot read is not retried.
        let options = AudioOptions::from_proto(job.options.as_ref()).map_err(|error| {
            ConversionError::Unconvertible(format!("the job's options cannot be used: {error}"))
        })?;

        let (progress, progress_seen) = watch::channel(0);
        let superseded = CancellationToken::new();
        let stop = cancel.child_token();
        let reporter = tokio::spawn(
            report_progress(
                self.storage.clone(),
                job.id.clone(),
                job.attempts,
                progress_seen,
                superseded.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        let stage = Instant::now();
        let permit = tokio::select! {
            permit = self.conversions.acquire() => Some(permit.expect("the semaphore is never closed")),
            () = stop.cancelled() => None,
        };
        record_stage("wait", stage);
        let converted = match permit {
            Some(_permit) => {
                let stage = Instant::now();
                let conversion = Conversion {
                    input: &input,
                    workspace: workspace.path(),
                    options: &options,
                    original_filename: &job.original_filename,
                };
                let converted = self.tools.convert(&conversion, &progress, &stop).await;
                record_stage("convert", stage);
                converted
            }
            None => Err(ConversionError::Cancelled),
        };
        reporter.abort();
        if superseded.is_cancelled() {
            return Err(ConversionError::Superseded);
        }
        let output = converted?;
        if cancel.is_cancelled() {
            return Err(ConversionError::Cancelled);
        }
        let name = options.output_filename(&job.original_filename);
        let stage = Instant::now();
        let stored =
            transfer::upload_audio(&self.storage, job, &name, options.format, &output).await;
        record_stage("store", stage);
        stored
    }

    /// Marks the job done with its MP3 and announces it.
    async fn finish(&self, job: &pb::Job, mp3: pb::FileInfo, received: &Received) -> Outcome {
        let done = self.storage.mark_done(job, &mp3.id).await;
        let done = match done {
            Ok(done) => done,
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                // Another worker owns the job now, or the user deleted it: this MP3 is nobody's.
                tracing::info!(
                    reason = status.message(),
                    "job moved on without us; dropping our MP3"
                );
                self.delete_mp3(&mp3.id).await;
                return Outcome::Ack;
            }
            // The MP3 stays: the change may have been applied before the answer was lost.
            Err(status) => {
                return Outcome::Retry(
                    ConversionError::storage("finishing the job", status).report(),
                );
            }
        };
        metrics::counter!(crate::meters::JOBS_SUCCEEDED).increment(1);
        tracing::info!(mp3_id = %mp3.id, size = mp3.size, "job done");
        self.announce(&done, received).await
    }

    /// Maps a failed conversion to what happens next.
    async fn give_up_or_retry(
        &self,
        job: &pb::Job,
        error: ConversionError,
        received: &Received,
    ) -> Outcome {
        match error {
            ConversionError::Unconvertible(reason) => {
                metrics::counter!(crate::meters::JOBS_FAILED, "reason" => "unconvertible")
                    .increment(1);
                tracing::info!(%reason, "the file cannot be converted");
                self.fail(job, &reason, received).await
            }
            error @ ConversionError::Transient { .. } if received.last_attempt => {
                let reason = error.report();
                metrics::counter!(crate::meters::JOBS_FAILED, "reason" => "attempts_exhausted")
                    .increment(1);
                tracing::error!(%reason, "last attempt failed; failing the job");
                let told = format!(
                    "we could not convert your file after {} attempts because of a problem on \
                     our side; please upload it again later",
                    received.attempt
                );
                match self.fail(job, &told, received).await {
                    Outcome::Ack => Outcome::DeadLetter(reason),
                    other => other,
                }
            }
            error @ ConversionError::Transient { .. } => {
                metrics::counter!(crate::meters::JOBS_RETRIED).increment(1);
                self.hand_back(job).await;
                Outcome::Retry(error.report())
            }
            ConversionError::Cancelled => {
                tracing::info!("conversion cancelled; handing the job back");
                self.hand_back(job).await;
                Outcome::HandBack
            }
            ConversionError::Superseded => {
                tracing::info!("another worker took the job over; leaving it to them");
                Outcome::Ack
            }
        }
    }

    /// Marks the job failed for `reason` and announces it.
    async fn fail(&self, job: &pb::Job, reason: &str, received: &Received) -> Outcome {
        let failed = self.storage.mark_failed(job, reason).await;
        match failed {
            Ok(failed) => self.announce(&failed, received).await,
            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                tracing::info!(reason = status.message(), "job moved on without us");
                Outcome::Ack
            }
            Err(status) => {
                Outcome::Retry(ConversionError::storage("failing the job", status).report())
            }
        }
    }

    /// Puts the job back to QUEUED so the next delivery can claim it; if that fails, the next
    /// delivery takes it over instead.
    async fn hand_back(&self, job: &pb::Job) {
        if let Err(status) = self.storage.hand_back(job).await {
            tracing::warn!(error = status.message(), "could not hand the job back");
        }
    }

    /// Publishes the outcome of an ended job, unless the user was already told.
    async fn announce(&self, job: &pb::Job, received: &Received) -> Outcome {
        if job.notified {
            return Outcome::Ack;
        }
        let payload = match job.state() {
            pb::JobState::Done => Payload::ConversionSucceeded(ConversionSucceeded {
                job_id: job.id.clone(),
                mp3_id: job.mp3_id.clone(),
                owner_id: job.owner_id.clone(),
                owner_email: job.owner_email.clone(),
                original_filename: job.original_filename.clone(),
                format: AudioOptions::from_proto(job.options.as_ref())
                    .unwrap_or_default()
                    .format
                    .label()
                    .to_owned(),
            }),
            pb::JobState::Failed => Payload::ConversionFailed(ConversionFailed {
                job_id: job.id.clone(),
                owner_id: job.owner_id.clone(),
                owner_email: job.owner_email.clone(),
                original_filename: job.original_filename.clone(),
                reason: job.error_reason.clone(),
            }),
            _ => return Outcome::Ack,
        };
        let event = messaging::events::new_event(payload);
        match received.publisher.publish_outcome(&event).await {
            Ok(()) => Outcome::Ack,
            Err(error) => Outcome::Retry(
                ConversionError::transient_because("announcing the outcome", error).report(),
            ),
        }
    }

    async fn delete_mp3(&self, mp3_id: &str) {
        let deleted = self
            .storage
            .delete_file(pb::Bucket::Mp3s, mp3_id, &Owner::Any)
            .await;
        if let Err(status) = deleted {
            tracing::warn!(
                mp3_id,
                error = status.message(),
                "could not delete an unneeded MP3"
            );
        }
    }
}

/// Sends progress to the job, at most once per [`PROGRESS_INTERVAL`]. A refused update means
/// another worker claimed the job: fire `superseded` and `stop` so this one stops converting.
async fn report_progress(
    storage: StorageClient,
    job_id: String,
    claim: u32,
    mut progress: watch::Receiver<u32>,
    superseded: CancellationToken,
    stop: CancellationToken,
) {
    while progress.changed().await.is_ok() {
        let percent = *progress.borrow_and_update();
        match storage.report_progress(&job_id, claim, percent).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::FailedPrecondition => {
                superseded.cancel();
                stop.cancel();
                return;
            }
            // Progress is for the user's eyes only; conversion goes on without it.
            Err(status) => tracing::debug!(error = status.message(), "progress not recorded"),
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

/// A job's temporary directory and the video being fetched into it. Dropping it stops the
/// fetch and removes the directory.
struct Prefetch {
    video_id: String,
    /// Where the video is streamed to, if it is not read in place.
    copy: PathBuf,
    fetch: AbortOnDropHandle<Result<FetchedVideo, ConversionError>>,
    // Last: dropped after the fetch is aborted.
    workspace: tempfile::TempDir,
}

/// Time spent in one stage of a job (claim, fetch, wait for a conversion slot, convert, store,
/// finish), so an operator can see where a job's time goes: `converter_stage_seconds{stage}`.
fn record_stage(stage: &'static str, since: Instant) {
    metrics::histogram!(crate::meters::STAGE_DURATION, "stage" => stage)
        .record(since.elapsed().as_secs_f64());
}
