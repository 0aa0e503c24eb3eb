//! Why a conversion did not end in an MP3. The kinds differ in what happens next (fail the job,
//! retry it, hand it back, or leave it to another worker); the job handler maps each once.

/// Any error, kept as the cause of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A conversion that stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// The file can never be converted. The message is shown to the user as it is.
    #[error("{0}")]
    Unconvertible(String),
    /// Something outside the file failed (storage, broker, ffmpeg killed, time limit): another
    /// attempt may succeed.
    #[error("{what}")]
    Transient {
        /// What failed, in words for the log.
        what: String,
        /// Why, when another error says it.
        #[source]
        cause: Option<BoxError>,
    },
    /// Shutdown or a lost broker connection: the job goes back to the queue.
    #[error("cancelled")]
    Cancelled,
    /// Another worker claimed the job since (this one was presumed dead).
    #[error("another worker took the job over")]
    Superseded,
}

impl ConversionError {
    /// A passing failure that `what` says all of.
    pub fn transient(what: impl Into<String>) -> Self {
        Self::Transient {
            what: what.into(),
            cause: None,
        }
    }

    /// A passing failure of `what`, caused by `cause`.
    pub fn transient_because(what: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        Self::Transient {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// An error talking to the storage service while doing `what`.
    pub fn storage(what: &str, status: tonic::Status) -> Self {
        Self::transient_because(format!("storage failed while {what}"), status)
    }

    /// Everything that went wrong, causes included, for the log and the retry's reason.
    pub fn report(&self) -> String {
        service_kit::error::chain(self)
    }
}

impl From<std::io::Error> for ConversionError {
    fn from(error: std::io::Error) -> Self {
        Self::transient_because("local file error", error)
    }
}
