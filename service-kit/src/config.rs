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
