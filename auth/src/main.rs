//! Entry point: everything lives in the library so tests run the same code.

#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = auth::Cli::load().unwrap_or_else(|error| error.exit());
    auth::main(cli).await
}
