//! `mp3converter up` as a child process on free ports and its own data directory, the way a
//! user runs it, plus what the tests read from it: the gateway's URL from the start-up banner,
//! the outbox and the stored MP3s.

use crate::binary;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long `up` may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `mp3converter up`.
pub struct System {
    child: Child,
    pub gateway: String,
    pub data_dir: PathBuf,
}

impl System {
    /// Starts `up` on `data_dir` with `env` added, and waits for its banner. Real components are
    /// switched off, so the embedded defaults serve.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(data_dir, &[], env).await
    }

    /// [`System::start`] with `args` added to `up`'s own (`--tls`, say).
    pub async fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .args(["up", "--any-ports"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn,converter=info")
            .env("WORK_DIR", std::env::temp_dir());
        for variable in [
            "DATABASE_URL",
            "MONGODB_URI",
            "AMQP_URL",
            "SMTP_URL",
            "ADMIN_EMAIL",
            "DATA_DIR",
        ] {
            command.env_remove(variable);
        }
        command.envs(env.iter().copied());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("mp3converter up starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let gateway = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("reading up's output") {
                if let Some(url) = line.trim().strip_prefix("gateway") {
                    return url.trim().to_owned();
                }
            }
            panic!("up exited before printing the gateway's address");
        })
        .await
        .expect("up prints its banner in time");
        // Keep draining stdout so `up` never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            gateway,
            data_dir: data_dir.to_owned(),
        }
    }

    /// SIGKILL: no drain, no clean-up, like a crash or a power cut.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill up");
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with success.
    pub async fn stop(mut self) -> bool {
        let pid = self.child.id().expect("up is running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("up stops within a minute of SIGTERM")
            .expect("waiting for up");
        status.success()
    }

    /// The e-mails written to the outbox.
    pub fn outbox(&self) -> Vec<String> {
        files_with_extension(&self.data_dir.join("outbox"), "eml")
            .iter()
            .map(|path| std::fs::read_to_string(path).expect("read an e-mail"))
            .collect()
    }

    /// How many MP3s the storage service holds.
    pub fn stored_mp3s(&self) -> usize {
        files_with_extension(&self.data_dir.join("storage").join("mp3s"), "json").len()
    }
}

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == extension))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("reading {}: {error}", dir.display()),
    }
}

/// Whether `path` holds an MP3: an ID3 tag or an MPEG audio frame header at the start.
pub fn looks_like_mp3(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.len() > 1024
        && (bytes.starts_with(b"ID3") || (bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0))
}

/// Runs the `sh` block of the README that follows the marker `<!-- walkthrough:NAME -->`, with
/// bash in `dir`, failing on the first failed command.
pub async fn run_readme_block(
    name: &str,
    dir: &Path,
    env: &[(&str, String)],
) -> std::process::Output {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("read the README");
    let marker = format!("<!-- walkthrough:{name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("the README has no {marker}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no sh block after {marker}"))
        .0;
    let path = format!(
        "{}:{}",
        binary().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("timeout")
        .args(["300", "bash", "-euo", "pipefail", "-c", block])
        .current_dir(dir)
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("bash runs");
    println!(
        "--- walkthrough:{name} stdout\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    println!(
        "--- walkthrough:{name} stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
