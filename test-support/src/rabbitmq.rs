//! Queue names behind a unique prefix per test, on the real RabbitMQ.

use anyhow::Context;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use std::sync::Mutex;
use std::time::Duration;

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One test's corner of the broker: every queue it names starts with [`TestBroker::prefix`], and
/// the queues it named are deleted when this value is dropped.
#[derive(Debug)]
pub struct TestBroker {
    url: String,
    prefix: String,
    named: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

impl TestBroker {
    /// Checks that the broker at `AMQP_TEST_URL` answers and picks a fresh prefix.
    pub async fn create() -> anyhow::Result<Self> {
        let url = crate::env_or("AMQP_TEST_URL", DEFAULT_URL);
        let connection = connect(&url)
            .await
            .with_context(|| format!("connecting to RabbitMQ at {url} (is it running?)"))?;
        connection.close(200, "ok".into()).await?;
        Ok(Self {
            url,
            prefix: format!("{}.", crate::unique_name("t-")),
            named: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
        })
    }

    /// The broker's URL, as a service's `AMQP_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix of every queue this test uses (ends with a dot).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefixed name for `queue`, remembered for deletion with its dead-letter queue
    /// (`{name}.dead`) and the delay queues a worker on the default retry policy declares (see
    /// [`TestBroker::remember`] for others).
    pub fn queue(&self, queue: &str) -> String {
        let name = format!("{}{queue}", self.prefix);
        self.remember(name.clone());
        self.remember(messaging::QueueConfig::dead_letter_queue(&name));
        self.remember_retry_queues(&name, &messaging::RetryConfig::default());
        name
    }

    /// Every queue and the outcome exchange of a deployment, behind this test's prefix, each
    /// remembered for deletion, with the delay queues of webhook retries on the default
    /// schedule (a notifier declares them when it starts; a test on another schedule remembers
    /// its own).
    pub fn queues(&self) -> messaging::QueueConfig {
        let queues = messaging::QueueConfig::with_prefix(&self.prefix);
        for queue in queues.queues() {
            let unprefixed = queue.strip_prefix(&self.prefix).expect("prefixed");
            self.queue(unprefixed);
        }
        let webhook_retry = notifier::webhook::retry_on(&webhooks::RetrySchedule::default());
        self.remember_retry_queues(&queues.webhook_queue, &webhook_retry);
        self.exchanges
            .lock()
            .expect("exchange list lock")
            .push(queues.outcome_exchange.clone());
        queues
    }

    /// Remembers another queue to delete at the end (a retry queue, say).
    pub fn remember(&self, name: impl Into<String>) {
        self.named
            .lock()
            .expect("queue list lock")
            .push(name.into());
    }

    /// Remembers for deletion the delay queues `retry` declares for `queue`.
    pub fn remember_retry_queues(&self, queue: &str, retry: &messaging::RetryConfig) {
        for (_, name) in retry.retry_queues(queue) {
            self.remember(name);
        }
    }

    /// A new connection to the broker.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        connect(&self.url).await
    }

    /// A proxy in front of the broker (for a test to cut, stop or hold), and the `AMQP_URL`
    /// that goes through it.
    pub async fn proxy(&self) -> anyhow::Result<(crate::TcpProxy, String)> {
        let host_port = self
            .url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .context("AMQP_TEST_URL is not amqp://user:password@host:port/vhost")?;
        let broker_addr = tokio::net::lookup_host(host_port)
            .await?
            .next()
            .with_context(|| format!("{host_port} resolves to no address"))?;
        let proxy = crate::TcpProxy::start(broker_addr).await?;
        let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr());
        Ok((proxy, through_proxy))
    }
}

/// How long a connection may take to open. A broker out of file handles accepts the TCP
/// connection and then never answers; without a limit, every test would wait for nextest to
/// kill it.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

async fn connect(url: &str) -> anyhow::Result<Connection> {
    tokio::time::timeout(
        CONNECT_WITHIN,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "RabbitMQ opened no connection within {CONNECT_WITHIN:?}: out of file handles \
             (leftover queues?) or blocked; see `rabbitmq-diagnostics status`"
        )
    })?
    .map_err(Into::into)
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.named.lock().expect("queue list lock"));
        let exchanges = std::mem::take(&mut *self.exchanges.lock().expect("exchange list lock"));
        if names.is_empty() && exchanges.is_empty() {
            return;
        }
        let url = self.url.clone();
        crate::cleanup_blocking("test queues", async move {
            let connection = connect(&url).await?;
            let mut failed = Vec::new();
            // A channel per deletion, so that one refused (which closes its channel) leaves the
            // others to go on. Each is closed here, not when dropped: a close still on its way
            // when the connection closes fails that ("invalid channel state: Closing").
            let queues = names.into_iter().map(|name| (true, name));
            let exchanges = exchanges.into_iter().map(|name| (false, name));
            for (is_queue, name) in queues.chain(exchanges) {
                let channel = connection.create_channel().await?;
                let deleted = if is_queue {
                    let options = QueueDeleteOptions::default();
                    channel
                        .queue_delete(name.as_str().into(), options)
                        .await
                        .map(drop)
                } else {
                    let options = ExchangeDeleteOptions::default();
                    channel.exchange_delete(name.as_str().into(), options).await
                };
                match deleted {
                    Ok(()) => channel.close(200, "ok".into()).await?,
                    Err(error) => failed.push(format!("{name}: {error}")),
                }
            }
            connection.close(200, "ok".into()).await?;
            anyhow::ensure!(failed.is_empty(), "not deleted: {}", failed.join("; "));
            Ok(())
        });
    }
}

/// A RabbitMQ node of the test's own that accepts TLS connections only (AMQPS, its
/// certificate from `tls`), for the tests of `amqps://`, which the machine's shared broker does
/// not serve. Its files live in a temp directory; the node is stopped when this is dropped.
#[derive(Debug)]
pub struct TlsRabbitMq {
    port: u16,
    node: String,
    _dir: tempfile::TempDir,
}

impl TlsRabbitMq {
    /// Starts the node (`rabbitmq-server` with a configuration of its own: a TLS listener on
    /// a free port, no plain one) and waits until an `amqps://` connection trusting `tls.ca`
    /// opens.
    pub async fn start(tls: &crate::tls::ServerTls) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::temp_dir();
        let root = dir.path();
        // The server script drops to the rabbitmq user: it must read the files and write here.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777))?;
        let copy = |from: &std::path::Path, name: &str| -> anyhow::Result<std::path::PathBuf> {
            let to = root.join(name);
            std::fs::copy(from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
            Ok(to)
        };
        let (ca, cert, key) = (
            copy(&tls.ca, "ca.crt")?,
            copy(&tls.cert, "server.crt")?,
            copy(&tls.key, "server.key")?,
        );
        let port = crate::free_port();
        let config = root.join("rabbitmq.conf");
        std::fs::write(
            &config,
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 loopback_users = none\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        )?;
        let plugins = root.join("enabled_plugins");
        std::fs::write(&plugins, "[].\n")?;
        let node_name = format!("{}@localhost", crate::unique_name("tls-"));
        std::process::Command::new("setsid")
            .arg("rabbitmq-server")
            .env("HOME", root)
            .env("RABBITMQ_NODENAME", &node_name)
            .env("RABBITMQ_DIST_PORT", crate::free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", root.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", root.join("log"))
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting rabbitmq-server")?;
        let node = Self {
            port,
            node: node_name,
            _dir: dir,
        };
        let pem = std::fs::read_to_string(&tls.ca)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let tls_config = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(pem.clone()),
            };
            let connected = Connection::connect_with_config(
                &node.url(),
                ConnectionProperties::default(),
                tls_config,
                lapin::runtime::default_runtime()?,
            )
            .await;
            if let Ok(connection) = connected {
                connection.close(200, "ok".into()).await?;
                return Ok(node);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the TLS RabbitMQ node did not accept a connection within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// `amqps://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for TlsRabbitMq {
    fn drop(&mut self) {
        // The node runs as the rabbitmq user, detached from this process: its name, unique
        // to this test, finds its processes (stopped even if it never finished starting).
        let _ = std::process::Command::new("pkill")
            .args(["-TERM", "-f", &self.node])
            .status();
    }
}
