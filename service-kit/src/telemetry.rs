//! Tracing set-up: one subscriber per process, JSON in production, pretty in a terminal.

use crate::config::{ConfigError, LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber and the Prometheus recorder. Calling it again
/// (several services in one process, as in tests or the single-process run) keeps the first
/// one. A filter that does not parse is refused, never replaced by another.
pub fn init(config: &TelemetryConfig) -> Result<(), ConfigError> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|error| ConfigError::invalid("RUST_LOG", format!("does not parse: {error}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    crate::metrics::prometheus();
    Ok(())
}
