//! A fresh MySQL (MariaDB) database per test.

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306";

/// A database created for one test and dropped when this value is dropped.
#[derive(Debug)]
pub struct TestMysql {
    server_url: String,
    name: String,
}

impl TestMysql {
    /// Creates an empty database with a unique name on the server at `MYSQL_TEST_URL`.
    pub async fn create() -> anyhow::Result<Self> {
        let server_url = crate::env_or("MYSQL_TEST_URL", DEFAULT_URL)
            .trim_end_matches('/')
            .to_owned();
        let name = crate::unique_name("t_");
        let server = Database::connect(server_url.as_str())
            .await
            .with_context(|| format!("connecting to MySQL at {server_url} (is it running?)"))?;
        server
            .execute_unprepared(&format!("CREATE DATABASE `{name}`"))
            .await
            .context("creating the test database")?;
        server.close().await?;
        Ok(Self { server_url, name })
    }

    /// The URL of the fresh database, as a service's `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server_url, self.name)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestMysql {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        crate::cleanup_blocking("a MySQL test database", async move {
            let server = Database::connect(server_url.as_str()).await?;
            server
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .await?;
            server.close().await?;
            Ok(())
        });
    }
}

/// A MariaDB server of the test's own that accepts TLS connections only (its certificate from
/// `tls`), in a temp directory: for the tests of TLS to the accounts database, which the
/// machine's shared server does not speak. Stopped when dropped.
#[derive(Debug)]
pub struct TlsMariaDb {
    port: u16,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsMariaDb {
    /// Initialises a data directory (`mariadb-install-db`), starts `mariadbd` on a free port
    /// with `--require-secure-transport`, and creates the database `accounts`.
    pub async fn start(tls: &crate::tls::ServerTls) -> anyhow::Result<Self> {
        let dir = crate::temp_dir();
        let data = dir.path().join("data");
        let socket = dir.path().join("mariadb.sock");
        let installed = tokio::process::Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .await
            .context("running mariadb-install-db")?;
        anyhow::ensure!(installed.status.success(), "mariadb-install-db failed");
        let port = crate::free_port();
        let absolute =
            |path: &std::path::Path| std::path::absolute(path).map(|p| p.display().to_string());
        let child = tokio::process::Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadb.pid").display()
            ))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin"])
            .arg(format!("--ssl-cert={}", absolute(&tls.cert)?))
            .arg(format!("--ssl-key={}", absolute(&tls.key)?))
            .arg(format!("--ssl-ca={}", absolute(&tls.ca)?))
            .arg("--require-secure-transport=ON")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting mariadbd")?;
        // Over its socket (no TLS there), as an operator prepares a server.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let created = tokio::process::Command::new("mariadb")
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-uroot", "-e", "CREATE DATABASE IF NOT EXISTS accounts"])
                .output()
                .await?;
            if created.status.success() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "mariadbd did not answer within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Self {
            port,
            _child: child,
            _dir: dir,
        })
    }

    /// `mysql://root@127.0.0.1:PORT/accounts`, without TLS options (the test adds its own).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/accounts", self.port)
    }
}
