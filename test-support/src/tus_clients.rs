//! tus clients nobody here wrote, driving the gateway's `/files/` as users' programs would:
//! tuspy (PyPI, from the test venv) and tus-js-client (npm, under Node), through the small
//! scripts in `tools/`. Each uploads a file whole and returns the upload's URL.

use std::path::Path;

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusClient {
    /// tuspy, with an SHA-1 `Upload-Checksum` on every chunk.
    Tuspy,
    /// tus-js-client under Node.
    TusJs,
}

impl TusClient {
    /// Both clients.
    pub const ALL: [TusClient; 2] = [TusClient::Tuspy, TusClient::TusJs];

    /// Uploads `file` to `endpoint` (the server's `/files/` URL) as the holder of `token`, in
    /// PATCHes of `chunk_bytes`, with `metadata` as the upload's metadata; the upload's URL.
    pub async fn upload(
        self,
        endpoint: &str,
        token: &str,
        file: &Path,
        chunk_bytes: usize,
        metadata: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/tools");
        let (program, script) = match self {
            TusClient::Tuspy => ("python3", format!("{tools}/tus_upload.py")),
            TusClient::TusJs => ("node", format!("{tools}/tus_upload.mjs")),
        };
        let output = tokio::process::Command::new(program)
            .arg(script)
            .arg(endpoint)
            .arg(token)
            .arg(file)
            .arg(chunk_bytes.to_string())
            .args(metadata.iter().map(|(key, value)| format!("{key}={value}")))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|error| {
                anyhow::anyhow!(
                    "{program} runs (scripts/test puts the test venv and node on PATH): {error}"
                )
            })?;
        anyhow::ensure!(
            output.status.success(),
            "{self:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let url = String::from_utf8(output.stdout)?.trim().to_owned();
        anyhow::ensure!(!url.is_empty(), "{self:?} printed no upload URL");
        Ok(url)
    }
}
