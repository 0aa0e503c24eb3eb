//! A webhook receiver nobody here wrote the verification of: `tools/webhook_receiver.py`, which
//! checks every request with the Standard Webhooks reference library (PyPI `standardwebhooks`,
//! in the test venv `scripts/test` puts on `PATH`) and reports each as a JSON line.

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// The receiver, listening on 127.0.0.1; stopped when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    _process: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Where to send webhooks (`http://127.0.0.1:{port}/hooks/mp3`).
    pub url: String,
}

impl WebhookReceiver {
    /// A receiver on a free port verifying with each of `secrets` (`whsec_…`), answering 503
    /// to its first `fail_first` requests.
    pub async fn start(secrets: &[String], fail_first: u32) -> Self {
        Self::start_on(0, secrets, fail_first).await
    }

    /// [`WebhookReceiver::start`] on `port` (0: a free one), for an endpoint registered before
    /// its secret, and so its receiver, existed.
    pub async fn start_on(port: u16, secrets: &[String], fail_first: u32) -> Self {
        Self::answering(port, secrets, fail_first, 204).await
    }

    /// [`WebhookReceiver::start_on`], answering `status` to each verified request (after the
    /// first `fail_first`).
    pub async fn answering(port: u16, secrets: &[String], fail_first: u32, status: u16) -> Self {
        Self::run(
            port,
            secrets,
            &[
                ("--fail-first", fail_first.to_string()),
                ("--answer", status.to_string()),
            ],
        )
        .await
    }

    /// A receiver on `port` that answers its first `failing` requests with `status` and
    /// `Retry-After: retry_after` (seconds), then 204.
    pub async fn asking_for_a_pause(
        port: u16,
        secrets: &[String],
        failing: u32,
        status: u16,
        retry_after: u32,
    ) -> Self {
        Self::run(
            port,
            secrets,
            &[
                ("--fail-first", failing.to_string()),
                ("--fail-status", status.to_string()),
                ("--retry-after", retry_after.to_string()),
            ],
        )
        .await
    }

    /// A receiver on `port` that leaves its first `held` requests unanswered (it hangs), then
    /// answers 204.
    pub async fn hanging_first(port: u16, secrets: &[String], held: u32) -> Self {
        Self::run(port, secrets, &[("--hold-first", held.to_string())]).await
    }

    async fn run(port: u16, secrets: &[String], options: &[(&str, String)]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/webhook_receiver.py");
        let mut process = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(
                options
                    .iter()
                    .flat_map(|(flag, value)| [*flag, value.as_str()]),
            )
            .args(secrets)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (is the test venv on PATH? scripts/test puts it there)");
        let mut lines = BufReader::new(process.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver starts")
            .expect("its output reads")
            .expect("the receiver prints its port (is standardwebhooks installed?)");
        let port = first.strip_prefix("PORT ").expect("PORT n").to_owned();
        Self {
            _process: process,
            lines,
            url: url_on(port.parse().expect("a port")),
        }
    }

    /// What the receiver made of its next request, waiting up to `within` for it.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .ok()?
            .expect("its output reads")?;
        Some(serde_json::from_str(&line).expect("a JSON line"))
    }

    /// What the receiver made of its next request (which must come within 10 s).
    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("the receiver saw a request")
    }
}

/// The URL a receiver on `port` answers at.
pub fn url_on(port: u16) -> String {
    format!("http://127.0.0.1:{port}/hooks/mp3")
}
