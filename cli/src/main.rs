#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Parsed as the services' own binaries parse, so `serve ROLE` takes each secret's `_FILE`
    // form too.
    let cli = service_kit::secret_files::parse(std::env::args_os())
        .unwrap_or_else(|error: service_kit::config::ConfigError| error.exit());
    mp3converter::main(cli).await
}
