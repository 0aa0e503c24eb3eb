//! The event types an endpoint can ask for. A message's body is `{type, timestamp, data}`.

/// A job's audio file is ready.
pub const JOB_SUCCEEDED: &str = "job.succeeded";
/// A job failed, with the reason the user is told.
pub const JOB_FAILED: &str = "job.failed";
/// The types an endpoint can ask for; an endpoint that names none gets them all.
pub const EVENT_TYPES: [&str; 2] = [JOB_SUCCEEDED, JOB_FAILED];
