//! Configuration pieces every service flattens into its own `Config`, so the same variables
//! mean the same thing everywhere, and the three ways a `Config` comes to be:
//!
//! - a service's binary reads it from the environment and its flags, parsed and validated once
//!   ([`ConfigError`] names the variable at fault and never holds a secret's value);
//! - `up` reads each service's from the environment ([`from_env`]), then sets typed fields
//!   (ports, the data directory, the other services' addresses);
//! - tests start from the documented defaults with the environment ignored ([`defaults`]) and
//!   set typed fields. No configuration is ever assembled from argument strings.

use clap::{Args, Parser, ValueEnum};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

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

    /// Log filter in `tracing` syntax, e.g. `info,auth=debug`; one that does not parse stops
    /// the service.
    #[arg(long, env = "RUST_LOG", value_name = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
        }
    }
}

/// Checks a log filter (`RUST_LOG`) the way the subscriber will read it.
pub fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|error| format!("`{value}` is not a log filter: {error}"))
}

/// What every service's `Config` is: parsed from the environment and flags (clap), checked
/// once by [`ServiceConfig::validate`], and buildable from its declared defaults.
pub trait ServiceConfig: Parser {
    /// Checks what parsing one value at a time cannot (combinations, files, programs),
    /// naming the variable at fault.
    fn validate(&self) -> Result<(), ConfigError>;

    /// From the process's command line and environment (each secret's `_FILE` form
    /// included: [`crate::secret_files`]), checked: a service's binary.
    fn load() -> Result<Self, ConfigError> {
        let config: Self = crate::secret_files::parse(std::env::args_os())?;
        config.validate()?;
        Ok(config)
    }

    /// From the process's environment alone (no command-line flags), not yet checked: how `up`
    /// reads each service's variables before it sets the fields that are its own to choose.
    fn from_env() -> Result<Self, ConfigError> {
        crate::secret_files::parse([Self::command().get_name().to_owned()])
    }

    /// The documented defaults, exactly as the declaration states them, with the process's
    /// environment ignored: where tests start before they set the fields they care about.
    fn defaults() -> Self {
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from([std::ffi::OsString::from("defaults")])
            .expect("every setting has a default or is optional");
        Self::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// A configuration a service refuses to start with. It names the variable at fault and never
/// holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that parsed but cannot work (or a combination of values).
    #[error("invalid configuration: {variable} {problem}")]
    Invalid {
        /// The environment variable at fault.
        variable: Cow<'static, str>,
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
    pub fn invalid(variable: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            variable: variable.into(),
            problem: problem.into(),
        }
    }

    /// The variable at fault, for a value that parsed but cannot work.
    pub fn variable(&self) -> Option<&str> {
        match self {
            Self::Invalid { variable, .. } => Some(variable),
            Self::Parse(_) => None,
        }
    }

    /// Says what is wrong on standard error and ends the process, as a service that refuses to
    /// start (exit code 2, like any other usage error; clap's own help and version output exit
    /// 0).
    pub fn exit(self) -> ! {
        match self {
            Self::Parse(error) => error.exit(),
            invalid @ Self::Invalid { .. } => {
                eprintln!("error: {invalid}");
                std::process::exit(2)
            }
        }
    }
}

/// Refuses one of two settings that only work together (`(variable, is set)` each) given
/// without the other, naming the missing one.
pub fn set_together(
    first: (&'static str, bool),
    second: (&'static str, bool),
) -> Result<(), ConfigError> {
    match (first, second) {
        ((present, true), (missing, false)) | ((missing, false), (present, true)) => Err(
            ConfigError::invalid(missing, format!("is required when {present} is set")),
        ),
        _ => Ok(()),
    }
}

/// Where a service with an API listens, with its own ports as defaults: `LISTEN_ADDR` for the
/// API, `OPS_LISTEN_ADDR` for `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct ApiAddrs<const API_PORT: u16, const OPS_PORT: u16> {
    /// Address (or bare port) the service's API listens on.
    #[arg(long = "listen-addr", env = "LISTEN_ADDR", value_name = "LISTEN_ADDR", default_value_t = any_interface(API_PORT), value_parser = parse_listen_addr)]
    pub api: SocketAddr,

    /// Address (or bare port) of the health (`/healthz`, `/readyz`) and `/metrics` endpoint.
    #[arg(long = "ops-listen-addr", env = "OPS_LISTEN_ADDR", value_name = "OPS_LISTEN_ADDR", default_value_t = any_interface(OPS_PORT), value_parser = parse_listen_addr)]
    pub ops: SocketAddr,
}

/// Where a worker (which has no API) serves `/healthz`, `/readyz` and `/metrics`:
/// `OPS_LISTEN_ADDR`, its own port as the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct OpsAddr<const OPS_PORT: u16> {
    /// Address (or bare port) of the health (`/healthz`, `/readyz`) and `/metrics` endpoint.
    #[arg(long = "ops-listen-addr", env = "OPS_LISTEN_ADDR", value_name = "OPS_LISTEN_ADDR", default_value_t = any_interface(OPS_PORT), value_parser = parse_listen_addr)]
    pub ops: SocketAddr,
}

/// `port` on every interface.
pub fn any_interface(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
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

/// A duration: `250ms`, `5s`, `5m`, `2h`, `5d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as `5s`, `5m` or `2h`"))?;
    let seconds = |factor: u64| Duration::from_secs(number.saturating_mul(factor));
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!(
            "`{text}` is not a duration such as `5s`, `5m` or `2h`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Example {
        /// Read from a variable every environment sets, so the test needs to set none.
        #[arg(long, env = "PATH", default_value = "as declared")]
        search_path: String,
        #[command(flatten)]
        telemetry: TelemetryConfig,
    }

    impl ServiceConfig for Example {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.search_path.is_empty() {
                return Err(ConfigError::invalid("PATH", "is empty"));
            }
            Ok(())
        }
    }

    #[test]
    fn defaults_are_the_declared_ones_whatever_the_environment_says() {
        let example = Example::defaults();
        assert_eq!(example.search_path, "as declared");
        assert_eq!(example.telemetry.log_filter, "info");
        let from_env = Example::from_env().unwrap();
        assert_eq!(from_env.search_path, std::env::var("PATH").unwrap());
    }

    #[test]
    fn an_invalid_value_is_refused_naming_its_variable_and_not_its_value() {
        let example = Example {
            search_path: String::new(),
            telemetry: TelemetryConfig::default(),
        };
        let refused = example.validate().unwrap_err().to_string();
        assert_eq!(refused, "invalid configuration: PATH is empty");
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_by_name() {
        assert!(parse_log_filter("info,auth=debug").is_ok());
        let refused = Example::try_parse_from(["example", "--log-filter", "auth=loud"])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("RUST_LOG"), "{refused}");
        assert!(refused.contains("auth=loud"), "{refused}");
    }

    #[test]
    fn settings_that_go_together_are_refused_alone_naming_the_missing_one() {
        assert!(set_together(("FIRST", true), ("SECOND", true)).is_ok());
        assert!(set_together(("FIRST", false), ("SECOND", false)).is_ok());
        assert_eq!(
            set_together(("FIRST", true), ("SECOND", false))
                .unwrap_err()
                .to_string(),
            "invalid configuration: SECOND is required when FIRST is set"
        );
        let first_missing = set_together(("FIRST", false), ("SECOND", true)).unwrap_err();
        assert_eq!(first_missing.variable(), Some("FIRST"));
    }

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

    #[test]
    fn durations_take_a_unit_or_plain_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
        assert!(parse_duration("5 days").unwrap_err().contains("`5 days`"));
    }
}
