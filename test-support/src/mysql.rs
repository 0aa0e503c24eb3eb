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
