//! Configuration pieces every service flattens into its own clap `Config`, so the same
//! variables mean the same thing everywhere. Services read their config from the environment
//! (and flags, for local use); clap refuses to start on a bad value and names the variable.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: for production, where logs are collected and queried.
    Json,
    /// Human-readable lines: for a terminal.
    Pretty,
}

/// Logging settings shared by every service.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info,auth=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// A configuration a service refuses to start with. It names the variable at fault and never
/// holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that parsed but cannot work (or a combination of values).
    #[error("invalid configuration: {variable} {problem}")]
    Invalid {
        /// The environment variable at fault.
        variable: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A value that does not parse, or a missing one; clap's message names the flag and its
    /// variable.
    #[error(transparent)]
    Parse(#[from] clap::Error),
}

impl ConfigError {
    /// `variable` is set, but `problem`.
    pub fn invalid(variable: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            variable,
            problem: problem.into(),
        }
    }
}

/// Parses a listen address, accepting a bare port (`8080`) as `0.0.0.0:8080`.
pub fn parse_listen_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    value
        .parse()
        .map_err(|_| format!("`{value}` is not a port or a host:port address"))
}

#[cfg(test)]
mod tests {
    use super::parse_listen_addr;

    #[test]
    fn listen_addr_accepts_port_or_socket_address() {
        assert_eq!(
            parse_listen_addr("8080").unwrap().to_string(),
            "0.0.0.0:8080"
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:50051").unwrap().to_string(),
            "127.0.0.1:50051"
        );
        assert!(parse_listen_addr("localhost:eighty").is_err());
    }
}
