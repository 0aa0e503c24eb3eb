//! The release binaries as separate processes, for benchmarks that measure a service's own
//! memory (VmHWM of its process, not of the benchmark), and reading any process's memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::TestMongo;

/// A running service; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess(Child);

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ServiceProcess {
    /// Starts the release binary `name` (beside the running benchmark in `target/release`)
    /// with `envs`.
    pub fn spawn_release(name: &str, envs: &[(&str, String)]) -> Self {
        let child = Command::new(release_binary(name))
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("LOG_FORMAT", "pretty")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("service starts");
        Self(child)
    }

    /// The release storage service on `mongo`, serving gRPC on `port` and its ops endpoint on
    /// `ops_port` of 127.0.0.1; `data_dir` is what it would use for local files.
    pub fn spawn_release_storage(
        port: u16,
        ops_port: u16,
        mongo: &TestMongo,
        data_dir: &Path,
    ) -> Self {
        Self::spawn_release(
            "storage",
            &[
                ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
                ("OPS_LISTEN_ADDR", format!("127.0.0.1:{ops_port}")),
                ("MONGODB_URI", mongo.uri().to_owned()),
                ("MONGODB_DATABASE", mongo.name().to_owned()),
                ("DATA_DIR", data_dir.display().to_string()),
            ],
        )
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The process's peak resident memory so far (VmHWM), in MiB; its children not included.
    pub fn peak_rss_mib(&self) -> f64 {
        memory_mib(self.0.id()).peak
    }
}

/// A process's resident memory, in MiB (NaN once it has exited); its children not included.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub now: f64,
    /// The peak so far (VmHWM).
    pub peak: f64,
}

/// The resident memory of process `pid`, from `/proc`.
pub fn memory_mib(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    Memory {
        now: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// `target/release/NAME`, found from the running benchmark (`target/release/deps/...`).
pub fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

/// Waits until `url` answers 200 (a service's `/readyz`), failing if `child`, the process that
/// serves it, exits first or `within` passes.
pub async fn wait_until_child_answers(
    child: &mut tokio::process::Child,
    http: &reqwest::Client,
    url: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the process exited ({status}) before {url} answered");
        }
        let answered = http.get(url).timeout(Duration::from_secs(2)).send().await;
        if answered.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{url} did not answer 200 within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until something listens on `port` of 127.0.0.1.
pub async fn wait_for_port(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}
