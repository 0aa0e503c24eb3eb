//! A fresh Mongo database per test, on the MongoDB-wire server.

use crate::tls::ServerTls;
use anyhow::Context;
use mongodb::Client;
use mongodb::bson::doc;

const DEFAULT_URI: &str = "mongodb://127.0.0.1:27117/?directConnection=true";

/// A database used by one test and dropped when this value is dropped.
#[derive(Debug)]
pub struct TestMongo {
    uri: String,
    name: String,
    client: Client,
}

impl TestMongo {
    /// Picks a unique database name on the server at `MONGODB_TEST_URI` and checks that the
    /// server answers.
    pub async fn create() -> anyhow::Result<Self> {
        Self::on(crate::env_or("MONGODB_TEST_URI", DEFAULT_URI)).await
    }

    /// Picks a unique database name on the server at `uri` (a [`MongoServer`] of the caller's
    /// own, say) and checks that the server answers.
    pub async fn on(uri: String) -> anyhow::Result<Self> {
        let client = Client::with_uri_str(&uri)
            .await
            .with_context(|| format!("parsing the MongoDB URI {uri}"))?;
        client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .with_context(|| {
                format!("pinging the MongoDB-wire server at {uri} (is it running?)")
            })?;
        Ok(Self {
            uri,
            name: crate::unique_name("t_"),
            client,
        })
    }

    /// The server's URI, as a service's `MONGODB_URI`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The database's name, for the service's database setting.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle to the test's database.
    pub fn database(&self) -> mongodb::Database {
        self.client.database(&self.name)
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        // The client's background tasks belong to the test's runtime; use a new one here.
        let uri = self.uri.clone();
        let name = self.name.clone();
        crate::cleanup_blocking("a Mongo test database", async move {
            let client = Client::with_uri_str(&uri).await?;
            client.database(&name).drop().await?;
            client.shutdown().await;
            Ok(())
        });
    }
}

/// A MongoDB-wire server of the test's own (SecantusDB's `secantusd-py`, which `scripts/test`
/// installs into the venv on `PATH`), for tests that stop it and start it again. Its data lives
/// in a temp dir that outlives restarts.
#[derive(Debug)]
pub struct MongoServer {
    port: u16,
    // Declared before `storage`, so a dropped server is killed before its data directory is
    // removed (the other way round, WiredTiger panics over its vanished log files).
    child: Option<tokio::process::Child>,
    storage: tempfile::TempDir,
    tls: Option<ServerTls>,
}

impl MongoServer {
    /// Starts a server on a free port and waits until it answers a ping.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// [`MongoServer::start`], accepting TLS connections only, with `tls`.
    pub async fn start_tls(tls: ServerTls) -> anyhow::Result<Self> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<ServerTls>) -> anyhow::Result<Self> {
        let mut server = Self {
            port: crate::free_port(),
            storage: crate::temp_dir(),
            child: None,
            tls,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`, with `&tls=true&tlsCAFile=…` (the
    /// server's authority) for a TLS server.
    pub fn uri(&self) -> String {
        let plain = self.plain_uri();
        match &self.tls {
            Some(tls) => format!("{plain}&tls=true&tlsCAFile={}", tls.ca.display()),
            None => plain,
        }
    }

    /// `mongodb://127.0.0.1:PORT/?directConnection=true`, without TLS whatever the server
    /// speaks.
    pub fn plain_uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Stops the server the way an operator does (SIGTERM) and waits for it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        if tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server (again) on the same port and data, and waits until it answers.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the server is running already");
        let mut command = tokio::process::Command::new("secantusd-py");
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key);
        }
        // Checkpoints as often as `scripts/services` has the shared server make them: with the
        // server's own default (a minute) the upload benchmark's multipart uploads into GridFS
        // ran at 58 MB/s (8 rounds), with five seconds at 82-100 MB/s.
        let child = command
            .env("SECANTUS_CHECKPOINT_SECONDS", "5")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            // `configureFailPoint`, so that a test can have its own server fail a command
            // (the shared server has none: a failure set there would reach every test).
            .arg("--enable-test-commands")
            .arg("--storage-path")
            .arg(self.storage.path())
            .args([
                "--oplog-max-entries",
                "1000",
                "--noop-heartbeat-seconds",
                "1",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting secantusd-py (run the tests through scripts/test, which installs it)",
            )?;
        self.child = Some(child);
        // Short selection timeout: each ping fails fast until the server listens.
        let client =
            Client::with_uri_str(format!("{}&serverSelectionTimeoutMS=500", self.uri())).await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if client
                .database("admin")
                .run_command(doc! { "ping": 1 })
                .await
                .is_ok()
            {
                client.shutdown().await;
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "secantusd-py did not answer a ping within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
