//! A fresh Mongo database per test, on the MongoDB-wire server.

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
        let uri = crate::env_or("MONGODB_TEST_URI", DEFAULT_URI);
        let client = Client::with_uri_str(&uri)
            .await
            .with_context(|| format!("parsing MONGODB_TEST_URI {uri}"))?;
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
