//! Entry point: everything lives in the library so tests run the same code.

#![forbid(unsafe_code)]

use service_kit::config::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = converter::Config::load().unwrap_or_else(|error| error.exit());
    converter::main(config).await
}
