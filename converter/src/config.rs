//! The converter's settings, from flags or the environment. clap refuses to start on a bad
//! value and names the variable.

use clap::Parser;
use messaging::WorkerLinks;
use service_kit::config::{ConfigError, OpsAddr, ServiceConfig, TelemetryConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The converter worker of mp3converter: turns uploaded videos into MP3s with ffmpeg.
#[derive(Debug, Clone, Parser)]
#[command(name = "converter", version)]
pub struct Config {
    /// Where the health and metrics endpoint listens (9090).
    #[command(flatten)]
    pub ops: OpsAddr<9090>,

    /// Storage, the broker and its queues, and the retry policy.
    #[command(flatten)]
    pub links: WorkerLinks,

    /// Jobs converted at once by this process (0: one per CPU core).
    #[arg(long, env = "CONCURRENCY", default_value_t = 0)]
    pub concurrency: u16,

    /// Where each job's temporary files go (its own directory, removed when the job ends).
    #[arg(long, env = "WORK_DIR", default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,

    /// The ffmpeg program.
    #[arg(
        long,
        env = "FFMPEG_PATH",
        value_name = "FFMPEG_PATH",
        default_value = "ffmpeg"
    )]
    pub ffmpeg: PathBuf,

    /// The ffprobe program.
    #[arg(
        long,
        env = "FFPROBE_PATH",
        value_name = "FFPROBE_PATH",
        default_value = "ffprobe"
    )]
    pub ffprobe: PathBuf,

    /// LAME VBR quality, 0 (best) to 9; ignored when MP3_BITRATE_KBPS is set.
    #[arg(long, env = "MP3_QUALITY", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub mp3_quality: u8,

    /// A constant bitrate in kbit/s instead of VBR (for example 192).
    #[arg(long, env = "MP3_BITRATE_KBPS", value_parser = clap::value_parser!(u16).range(32..=320))]
    pub mp3_bitrate_kbps: Option<u16>,

    /// Longest video accepted, in seconds; longer ones fail with a reason.
    #[arg(long, env = "MAX_DURATION_SECONDS", default_value_t = 4 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_duration_seconds: u64,

    /// Longest one conversion may run, in seconds, before ffmpeg is killed and the job retried.
    #[arg(long, env = "JOB_TIMEOUT_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_timeout_seconds: u64,

    /// How long in-flight jobs may go on after SIGTERM before they are handed back.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    pub shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// Jobs at once: the configured number, or one per core.
    pub fn effective_concurrency(&self) -> u16 {
        if self.concurrency > 0 {
            return self.concurrency;
        }
        std::thread::available_parallelism()
            .map(|cores| u16::try_from(cores.get()).unwrap_or(u16::MAX))
            .unwrap_or(1)
    }

    /// The per-job time limit.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_seconds)
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.links.validate()?;
        if !self.work_dir.is_dir() {
            return Err(ConfigError::invalid(
                "WORK_DIR",
                format!("`{}` is not a directory", self.work_dir.display()),
            ));
        }
        // Caught here, a missing ffmpeg stops the start with one clear line, instead of failing
        // (and retrying) every job. Found, not run: starting Debian's ffmpeg costs about 0.1 s
        // of CPU (it links 215 shared libraries), which a converter started for a backlog
        // would spend twice before its first job.
        for (variable, program) in [
            ("FFMPEG_PATH", &self.ffmpeg),
            ("FFPROBE_PATH", &self.ffprobe),
        ] {
            if executable(program).is_none() {
                return Err(ConfigError::invalid(
                    variable,
                    format!(
                        "`{}` is not an executable file (nor one on PATH): install ffmpeg, or \
                         point {variable} at it",
                        program.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The file `program` runs, found as `Command::new` finds it: the path itself when it names
/// one, else the first executable file of that name in a directory on PATH.
fn executable(program: &Path) -> Option<PathBuf> {
    let is_executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|found| found.is_file() && found.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() != 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|directory| directory.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ffmpeg_is_refused_at_start_up_by_name() {
        let with = |ffmpeg: &str| {
            Config {
                ffmpeg: ffmpeg.into(),
                ..Config::defaults()
            }
            .validate()
        };
        with("ffmpeg").expect("the real ffmpeg runs");
        let error = with("/no/such/ffmpeg").unwrap_err().to_string();
        assert!(error.contains("FFMPEG_PATH"), "{error}");
        assert!(error.contains("/no/such/ffmpeg"), "{error}");
        assert!(with("no-such-ffmpeg-on-path").is_err());
    }

    #[test]
    fn only_an_executable_file_counts_as_a_program() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("ffmpeg");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let mode = |mode| {
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mode(0o644);
        assert_eq!(executable(&script), None, "not executable");
        mode(0o755);
        assert_eq!(executable(&script), Some(script.clone()));
        assert_eq!(executable(dir.path()), None, "a directory");
        let found = executable(Path::new("ffmpeg")).expect("ffmpeg is on PATH");
        assert!(
            found.is_absolute() && found.ends_with("ffmpeg"),
            "{found:?}"
        );
    }
}
