//! Why a conversion did not end in an MP3. The kinds differ in what happens next (fail the job,
//! retry it, hand it back, or leave it to another worker); the job handler maps each once.

use tonic::Code;

/// A conversion that stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// The file can never be converted. The message is shown to the user as it is.
    #[error("{0}")]
    Unconvertible(String),
    /// Something outside the file failed (storage, broker, ffmpeg killed, time limit): another
    /// attempt may succeed.
    #[error("{0}")]
    Transient(String),
    /// Shutdown or a lost broker connection: the job goes back to the queue.
    #[error("cancelled")]
    Cancelled,
    /// Another worker claimed the job since (this one was presumed dead).
    #[error("another worker took the job over")]
    Superseded,
}

impl ConversionError {
    /// An error talking to the storage service while doing `what`.
    pub fn storage(what: &str, status: &tonic::Status) -> Self {
        Self::Transient(format!(
            "storage failed while {what}: {:?} {}",
            status.code(),
            status.message()
        ))
    }

    /// An error from a job update made under a claim: a refused compare-and-set means another
    /// worker owns the job now.
    pub fn claim(what: &str, status: &tonic::Status) -> Self {
        match status.code() {
            Code::FailedPrecondition => Self::Superseded,
            _ => Self::storage(what, status),
        }
    }
}

impl From<std::io::Error> for ConversionError {
    fn from(error: std::io::Error) -> Self {
        Self::Transient(format!("local file error: {error}"))
    }
}
