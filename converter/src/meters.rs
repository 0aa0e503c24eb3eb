//! Every metric the converter records, named and described once (the consumer's own, shared
//! with the notifier, are in `messaging::meters`).

service_kit::metrics_catalog! {
    /// Jobs claimed for conversion.
    counter JOBS_STARTED = "converter_jobs_started_total": Count, "Jobs claimed for conversion";
    /// Jobs that ended in an MP3.
    counter JOBS_SUCCEEDED = "converter_jobs_succeeded_total": Count, "Jobs that ended in an MP3";
    /// Jobs handed back for another attempt.
    counter JOBS_RETRIED = "converter_jobs_retried_total": Count, "Jobs handed back after a passing failure, for another attempt";
    /// Jobs failed, labelled `reason` (unconvertible, attempts_exhausted).
    counter JOBS_FAILED = "converter_jobs_failed_total": Count, "Jobs failed, by reason: unconvertible (the file) or attempts_exhausted (our side)";
    /// Time from claim to MP3 stored, for jobs that succeeded.
    histogram CONVERSION_DURATION = "converter_conversion_seconds": Seconds, "Time from claiming a job to its MP3 stored and recorded";
    /// Videos fetched, labelled `how`: in_place (storage's own file, read where it lies) or streamed.
    counter VIDEOS_FETCHED = "converter_videos_fetched_total": Count, "Videos fetched for conversion, by how: in_place (storage's own file, on this machine, read where it lies) or streamed (copied into the job's directory)";
    /// Time per stage, labelled `stage` (claim, fetch, wait, convert, store, finish).
    histogram STAGE_DURATION = "converter_stage_seconds": Seconds, "Time spent in each stage of a job: claim, fetch, wait (for a conversion slot), convert, store, finish";
}
