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

/// CPU seconds a process has used, from `/proc/PID/stat`: its own, and that of its children
/// it has waited for (so a worker's ffmpeg runs count once they have exited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// The process's own user and system time.
    pub own: f64,
    /// Its own system time alone.
    pub own_system: f64,
    /// User and system time of its children that have exited.
    pub children: f64,
}

impl std::ops::Sub for CpuTimes {
    type Output = CpuTimes;

    fn sub(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            own: self.own - earlier.own,
            own_system: self.own_system - earlier.own_system,
            children: self.children - earlier.children,
        }
    }
}

/// The CPU times of process `pid` (zero once it has exited).
pub fn cpu_times(pid: u32) -> CpuTimes {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: the fields that follow start after its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return CpuTimes::default();
    };
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line; `rest` starts at field 3.
    let tick = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0) / clock_ticks_per_second();
    CpuTimes {
        own: tick(14) + tick(15),
        own_system: tick(15),
        children: tick(16) + tick(17),
    }
}

/// How the whole machine's CPUs spent their time, in seconds summed over the CPUs (the `cpu`
/// line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// User and nice time.
    pub user: f64,
    /// System, IRQ and soft-IRQ time: the kernel's.
    pub kernel: f64,
    /// Idle and I/O-wait time.
    pub idle: f64,
}

impl MachineCpu {
    /// Now.
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse::<f64>().unwrap_or(0.0) / clock_ticks_per_second())
            .collect();
        let field = |n: usize| fields.get(n).copied().unwrap_or(0.0);
        Self {
            user: field(0) + field(1),
            kernel: field(2) + field(5) + field(6),
            idle: field(3) + field(4),
        }
    }

    /// The share of the CPUs' time that was busy between `earlier` and this reading.
    pub fn busy_share_since(&self, earlier: &Self) -> f64 {
        let (user, kernel, idle) = self.deltas(earlier);
        (user + kernel) / (user + kernel + idle)
    }

    /// The kernel's share of the busy time between `earlier` and this reading.
    pub fn kernel_share_since(&self, earlier: &Self) -> f64 {
        let (user, kernel, _) = self.deltas(earlier);
        kernel / (user + kernel)
    }

    fn deltas(&self, earlier: &Self) -> (f64, f64, f64) {
        (
            self.user - earlier.user,
            self.kernel - earlier.kernel,
            self.idle - earlier.idle,
        )
    }
}

/// The kernel's clock tick (`getconf CLK_TCK`, 100 on Linux's usual builds), read once.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's run time as the scheduler counts it (nanoseconds, not clock ticks), from
    /// `/proc/thread-self/schedstat`: a reading independent of the one under test.
    fn this_thread_ran_for() -> Duration {
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let nanos = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Duration::from_nanos(nanos)
    }

    #[test]
    fn a_busy_loop_shows_in_this_process_own_cpu_and_a_waited_child_in_its_children() {
        let before = cpu_times(std::process::id());
        // Spin until the scheduler has given this thread 300 ms of CPU, however long that takes
        // on a machine the rest of the suite is loading: wall time alone says nothing.
        let ran_before = this_thread_ran_for();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut spin = 0u64;
        while this_thread_ran_for() - ran_before < Duration::from_millis(300) {
            for _ in 0..10_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never got 300 ms of CPU"
            );
        }
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let used = cpu_times(std::process::id()) - before;
        // Clock ticks round each reading down by up to a tick (10 ms); other threads only add.
        assert!(used.own >= 0.27, "{used:?}");
        assert!(used.children > 0.0, "{used:?}");
    }
}
