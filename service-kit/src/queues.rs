//! The names of the queues the services share. The defaults are `video` and `mp3`; a prefix
//! lets several deployments (or parallel tests) share one broker without seeing each other.

use clap::Args;

/// The queue that carries `VideoUploaded` events to the converters.
pub const VIDEO_QUEUE: &str = "video";
/// The queue that carries conversion outcomes to the notifier.
pub const MP3_QUEUE: &str = "mp3";

/// Queue names, configurable per deployment.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue that carries uploaded videos to the converters.
    #[arg(long, env = "VIDEO_QUEUE", default_value = VIDEO_QUEUE)]
    pub video_queue: String,

    /// Queue that carries conversion outcomes to the notifier.
    #[arg(long, env = "MP3_QUEUE", default_value = MP3_QUEUE)]
    pub mp3_queue: String,
}

impl QueueConfig {
    /// The default names behind a prefix (`{prefix}video`, `{prefix}mp3`).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            video_queue: format!("{prefix}{VIDEO_QUEUE}"),
            mp3_queue: format!("{prefix}{MP3_QUEUE}"),
        }
    }

    /// The dead-letter queue that holds what could not be processed from `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dead")
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

#[cfg(test)]
mod tests {
    use super::QueueConfig;

    #[test]
    fn prefix_applies_to_every_queue() {
        let queues = QueueConfig::with_prefix("t-1234.");
        assert_eq!(queues.video_queue, "t-1234.video");
        assert_eq!(queues.mp3_queue, "t-1234.mp3");
        assert_eq!(
            QueueConfig::dead_letter_queue(&queues.video_queue),
            "t-1234.video.dead"
        );
        assert_eq!(QueueConfig::default().video_queue, "video");
    }
}
