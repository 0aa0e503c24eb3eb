//! The saved login: the gateway's URL, the e-mail and the bearer token, in `session.json` in the
//! user's config directory. The directory is made private (0700) and the file is written
//! readable by its owner only (0600), through a temporary file renamed into place, so a crash
//! never leaves half a token and no other user can read it at any moment.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "session.json";

/// What `login` keeps for the other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The gateway the token is for.
    pub url: String,
    /// Who logged in.
    pub email: String,
    /// The bearer token.
    pub access_token: String,
    /// When it expires, in seconds since the Unix epoch.
    pub expires_at: i64,
}

/// The config directory: the one given, else `$XDG_CONFIG_HOME/mp3converter`, else
/// `~/.config/mp3converter`.
pub fn config_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    if let Some(base) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(base).join("mp3converter"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("HOME is not set; pass --config-dir"))?;
    Ok(PathBuf::from(home).join(".config").join("mp3converter"))
}

/// The saved session in `dir`, if there is one.
pub fn load(dir: &Path) -> anyhow::Result<Option<Session>> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(anyhow::anyhow!("reading {}: {error}", path.display())),
    };
    let session = serde_json::from_str(&text).map_err(|error| {
        anyhow::anyhow!("{} is damaged ({error}); log in again", path.display())
    })?;
    Ok(Some(session))
}

/// Saves `session` in `dir` (0600), replacing any earlier one. Returns the file's path.
pub fn save(dir: &Path, session: &Session) -> anyhow::Result<PathBuf> {
    let json = serde_json::to_vec_pretty(session)?;
    write_private(dir, FILE_NAME, &json).map_err(|error| {
        anyhow::anyhow!(
            "saving the login to {}: {error}",
            dir.join(FILE_NAME).display()
        )
    })
}

/// Writes `contents` as `dir/file_name`, readable by its owner only (0600), in a private
/// directory (0700), through a temporary file renamed into place; the file's path.
pub fn write_private(dir: &Path, file_name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(file_name);
    let temporary = dir.join(format!(".{file_name}.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        // The mode above only applies to a new file; make sure of it either way.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_session_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mp3converter");
        let session = Session {
            url: "http://127.0.0.1:8080".into(),
            email: "ann@example.com".into(),
            access_token: "token".into(),
            expires_at: 1,
        };
        let path = save(&config, &session).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let loaded = load(&config).unwrap().unwrap();
        assert_eq!(loaded.access_token, "token");
        assert!(load(dir.path()).unwrap().is_none());
    }
}
