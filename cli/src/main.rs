#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mp3converter::main(mp3converter::Cli::parse()).await
}
