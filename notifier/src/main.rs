//! Entry point: everything lives in the library so tests run the same code.

#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    notifier::main(notifier::Cli::parse()).await
}
