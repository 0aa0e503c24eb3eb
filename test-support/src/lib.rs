//! Helpers every crate's tests share, in one place: each test gets its own isolated slice of
//! the real infrastructure (a fresh MySQL database, a fresh Mongo database, queue names behind
//! a unique prefix, a temp dir) and runs the services on port 0 from typed configurations
//! ([`configs`], [`app`]), alone, as the in-process [`mesh`], or as the five-process
//! [`cluster`], or from the container images as the played Kubernetes manifests ([`pods`]),
//! so tests run in parallel and repeat cleanly.
//!
//! Where the servers are comes from the environment that `scripts/test` exports, with the
//! same defaults it uses:
//!
//! | variable           | default                                          |
//! |--------------------|--------------------------------------------------|
//! | `MYSQL_TEST_URL`   | `mysql://root@127.0.0.1:3306`                    |
//! | `MONGODB_TEST_URI` | `mongodb://127.0.0.1:27117/?directConnection=true` |
//! | `AMQP_TEST_URL`    | `amqp://guest:guest@127.0.0.1:5672/%2f`          |
//!
//! Cleanup runs on `Drop` (databases dropped, queues deleted), on a helper thread with its own
//! runtime, because `Drop` cannot await.

#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod cluster;
pub mod configs;
pub mod grpc;
pub mod media;
pub mod mesh;
pub mod mongo;
pub mod mysql;
pub mod pods;
pub mod process;
pub mod proxy;
pub mod rabbitmq;
pub mod rest;
pub mod server;
pub mod smtp;
pub mod tls;
pub mod tus_clients;
pub mod webhook_receiver;

pub use app::Running;
pub use media::{
    VideoSpec, ebur128_loudness, ffmpeg_generate, ffprobe_audio, ffprobe_duration_seconds,
    generate_video, gray_pixels, mp4_bytes, mp4_like,
};
pub use mongo::{MongoServer, TestMongo};
pub use mysql::{TestMysql, TlsMariaDb};
pub use proxy::TcpProxy;
pub use rabbitmq::{TestBroker, TlsRabbitMq};
pub use smtp::{CapturedMail, SmtpCapture};
pub use tempfile::TempDir;
pub use webhook_receiver::WebhookReceiver;

/// Runs each scenario (an `async fn(Backend)` of the calling test file) once per backend, as
/// tests named `module::scenario`:
///
/// ```ignore
/// test_support::on_each!(Backend { Mysql => mysql, Sqlite => sqlite }: [round_trip, restart]);
/// ```
#[macro_export]
macro_rules! on_each {
    ($backend:ident { $($variant:ident => $module:ident),+ $(,)? }: $scenarios:tt) => {
        $( $crate::on_each!(@one $backend $variant $module $scenarios); )+
    };
    (@one $backend:ident $variant:ident $module:ident [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::$backend::$variant).await
                }
            )*
        }
    };
}

/// A name no other test (in this run or an earlier one) uses: `prefix` plus a random suffix of
/// lower-case hex, safe in MySQL, Mongo and AMQP names.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A port of 127.0.0.1 that nothing listens on right now and that no other test process is
/// handed while this one runs, for a process that binds it later (or for "the server is down"
/// tests).
///
/// Not a port from binding port 0: those are ephemeral ports, which the kernel also hands to
/// outgoing connections, so a client connection of any test running in parallel could take
/// the port before the process binds it (seen: a cluster's gateway failing with "Address
/// already in use"). The port is picked at random below the ephemeral range, where the kernel
/// never picks one itself, and reserved with a lock on a file named after it: two tests could
/// otherwise pick the same port before either bound it, or one could pick the port of
/// another's service while that service was stopped to be restarted (seen in CI: a cluster's
/// notifier failing to bind). The lock is held until the test process exits; the kernel
/// lets go of it then, however the process ends.
pub fn free_port() -> u16 {
    static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = ephemeral_start.saturating_sub(1024).clamp(1, 16384);
    let floor = ephemeral_start.saturating_sub(span).max(1024);
    let locks = std::env::temp_dir().join("mp3converter-test-ports");
    std::fs::create_dir_all(&locks)
        .unwrap_or_else(|error| panic!("creating {}: {error}", locks.display()));
    for _ in 0..1000 {
        let offset = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u32;
        let Ok(port) = u16::try_from(floor + offset) else {
            continue;
        };
        let path = locks.join(port.to_string());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
        // Locks on separate opens of one file exclude each other in one process too.
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            RESERVED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(lock);
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({floor}..{ephemeral_start})");
}

/// The Prometheus text exposition served at `url` (a service's `/metrics`).
pub async fn scrape(url: &str) -> String {
    reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|error| panic!("scraping {url}: {error}"))
        .text()
        .await
        .expect("a text exposition")
}

/// The sum of every series of the counter `name` in an exposition (0 when absent).
pub fn counter(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The series of `name` in an exposition, by the value of their one label (a histogram's
/// `NAME_sum{stage="fetch"} 1.5`, say): `(label value, value)` in the order served.
pub fn series_by_label(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = labels.split_once("} ")?;
            let (_, label) = labels.split_once("=\"")?;
            Some((
                label.strip_suffix('"')?.to_owned(),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("mp3converter-test-")
        .tempdir()
        .expect("temp dir can be created")
}

/// Installs a test-friendly tracing subscriber once (output captured per test by the runner).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Runs an async cleanup to completion from a `Drop`, on its own thread and runtime so it works
/// whether or not the dropping thread is inside a runtime.
pub(crate) fn cleanup_blocking<F>(what: &'static str, cleanup: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        runtime.block_on(cleanup)
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("test cleanup of {what} failed: {error:#}"),
        Err(_) => eprintln!("test cleanup of {what} panicked"),
    }
}

/// `len` bytes that look random (so no layer can compress them away) and are the same for
/// the same `seed`, for upload and download round trips.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        // xorshift64*: fast, and plenty for test data.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_bindable_and_outside_the_range_the_kernel_hands_to_clients() {
        let ephemeral_start: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        for _ in 0..20 {
            let port = super::free_port();
            assert!((1024..ephemeral_start).contains(&port), "{port}");
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[test]
    fn a_free_port_is_handed_out_once_while_its_process_runs() {
        // A thousand random picks from at most 16,384 ports hold a repeat all but surely
        // (1 - e^-30) unless each one handed out is reserved.
        let ports: Vec<u16> = (0..1000).map(|_| super::free_port()).collect();
        let distinct: std::collections::HashSet<&u16> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn unique_names_differ_and_keep_their_prefix() {
        let a = super::unique_name("t_");
        let b = super::unique_name("t_");
        assert_ne!(a, b);
        assert!(a.starts_with("t_"));
        assert!(a.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()));
    }
}
