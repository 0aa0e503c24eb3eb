//! A small client for the gateway's REST API. Files stream from and to disk: an upload is read
//! as it is sent (with tus, see [`crate::resumable`]), a download is written as it arrives (to
//! a `.partial` file renamed at the end, so an interrupted download never looks complete).

use base64::Engine;
use futures::StreamExt;
use indicatif::ProgressBar;

use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The gateway answered with an error.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The error's code from the JSON body.
        code: String,
        /// The error's message from the JSON body.
        message: String,
    },
    /// The gateway could not be reached, or the connection broke.
    #[error("cannot talk to the gateway at {url}: {source}")]
    Unreachable {
        /// The gateway's URL.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// A local file could not be read or written.
    #[error("{what}: {source}")]
    File {
        /// Which file, doing what.
        what: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The gateway's answer was not what the API promises.
    #[error("unexpected answer from the gateway: {0}")]
    Unexpected(String),
}

impl ApiError {
    /// Whether the gateway refused the caller's credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }

    /// Whether the same request may well succeed a moment later: a dropped connection, a
    /// gateway that is briefly unavailable, or (409, 423) a resource another request still
    /// holds.
    pub(crate) fn is_passing(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => {
                status.is_server_error()
                    || matches!(*status, StatusCode::CONFLICT | StatusCode::LOCKED)
            }
            Self::File { .. } | Self::Unexpected(_) => false,
        }
    }

    pub(crate) fn file(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::File { what, source }
    }
}

/// A token as `POST /login` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    /// The bearer token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// The fields of a job the client acts on (the JSON is printed whole).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// queued, converting, done or failed.
    pub status: String,
    /// 0 to 100 while converting.
    #[serde(default)]
    pub progress_percent: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// `/download/{mp3_id}` once done.
    pub download_url: Option<String>,
    /// The uploaded file's name.
    #[serde(default)]
    pub original_filename: String,
}

impl Job {
    /// The MP3's id, once the job is done.
    pub fn mp3_id(&self) -> Option<&str> {
        self.download_url
            .as_deref()
            .and_then(|url| url.rsplit('/').next())
            .filter(|id| !id.is_empty())
    }

    /// Whether the job has ended.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "failed")
    }
}

/// The gateway at `base`, with or without a token.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client for the gateway at `base` (`http://host:port` or `https://…`) over `http`.
    pub fn new(http: reqwest::Client, base: &str, token: Option<String>) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The gateway's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, ApiError> {
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let field = |name: &str| body["error"][name].as_str().map(str::to_owned);
        Err(ApiError::Refused {
            status,
            code: field("code").unwrap_or_else(|| "http_error".into()),
            message: field("message")
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        })
    }

    fn unreachable(&self, source: reqwest::Error) -> ApiError {
        ApiError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, ApiError> {
        let body = response
            .bytes()
            .await
            .map_err(|source| self.unreachable(source))?;
        serde_json::from_slice(&body).map_err(|error| ApiError::Unexpected(error.to_string()))
    }

    /// `POST /register`: the new account.
    pub async fn register(&self, email: &str, password: &str) -> Result<Value, ApiError> {
        let request = self
            .http
            .post(self.url("/register"))
            .json(&serde_json::json!({ "email": email, "password": password }));
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `POST /login` with HTTP Basic.
    pub async fn login(&self, email: &str, password: &str) -> Result<Token, ApiError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{password}"));
        let request = self
            .http
            .post(self.url("/login"))
            .header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// `GET /presets`.
    pub async fn presets(&self) -> Result<Value, ApiError> {
        let response = self.send(self.http.get(self.url("/presets"))).await?;
        self.json(response).await
    }

    /// Every job of the caller's, newest first: `GET /jobs` page after page, gathered into one
    /// `{"jobs": [...]}`.
    pub async fn jobs(&self) -> Result<Value, ApiError> {
        let mut jobs = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut request = self.http.get(self.url("/jobs"));
            if let Some(token) = &page_token {
                request = request.query(&[("page_token", token)]);
            }
            let response = self.send(self.authorized(request)).await?;
            let mut page: Value = self.json(response).await?;
            if let Some(listed) = page["jobs"].as_array_mut() {
                jobs.append(listed);
            }
            match page["next_page_token"].as_str() {
                Some(token) if !token.is_empty() => page_token = Some(token.to_owned()),
                _ => return Ok(serde_json::json!({ "jobs": jobs })),
            }
        }
    }

    /// A signed-in call of `method` on `path` (with `body` as JSON); its JSON answer, or
    /// `Value::Null` when it has none (a 204).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(self.authorized(request)).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        self.json(response).await
    }

    /// `POST /webhooks`: the new endpoint with its secret.
    pub async fn add_webhook(
        &self,
        url: &str,
        events: &[String],
        description: &str,
    ) -> Result<Value, ApiError> {
        let body = serde_json::json!({ "url": url, "events": events, "description": description });
        self.call(reqwest::Method::POST, "/webhooks", Some(&body))
            .await
    }

    /// `GET /webhooks`: the caller's endpoints.
    pub async fn webhooks(&self) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, "/webhooks", None).await
    }

    /// `GET /webhooks/{id}`.
    pub async fn webhook(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/webhooks/{}", path_segment(id));
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// `DELETE /webhooks/{id}`.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ApiError> {
        let path = format!("/webhooks/{}", path_segment(id));
        self.call(reqwest::Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// `POST /webhooks/{id}/test`: the queued ping's message id.
    pub async fn test_webhook(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/webhooks/{}/test", path_segment(id));
        self.call(reqwest::Method::POST, &path, None).await
    }

    /// `GET /webhooks/{id}/deliveries`: the endpoint's newest attempts.
    pub async fn webhook_deliveries(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/webhooks/{}/deliveries", path_segment(id));
        self.call(reqwest::Method::GET, &path, None).await
    }

    /// `POST /webhooks/{id}/deliveries/{message_id}/redeliver`.
    pub async fn redeliver_webhook(&self, id: &str, message_id: &str) -> Result<Value, ApiError> {
        let path = format!(
            "/webhooks/{}/deliveries/{}/redeliver",
            path_segment(id),
            path_segment(message_id)
        );
        self.call(reqwest::Method::POST, &path, None).await
    }

    /// `POST /webhooks/{id}/enable`.
    pub async fn enable_webhook(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/webhooks/{}/enable", path_segment(id));
        self.call(reqwest::Method::POST, &path, None).await
    }

    /// `POST /webhooks/{id}/rotate-secret`: the new secret.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<Value, ApiError> {
        let path = format!("/webhooks/{}/rotate-secret", path_segment(id));
        self.call(reqwest::Method::POST, &path, None).await
    }

    /// `GET /jobs/{id}`: the job as JSON and its parsed fields.
    pub async fn job(&self, id: &str) -> Result<(Value, Job), ApiError> {
        let path = format!("/jobs/{}", path_segment(id));
        let response = self
            .send(self.authorized(self.http.get(self.url(&path))))
            .await?;
        let value: Value = self.json(response).await?;
        let job = serde_json::from_value(value.clone())
            .map_err(|error| ApiError::Unexpected(error.to_string()))?;
        Ok((value, job))
    }

    /// `GET /download/{mp3_id}` into `output` (or, when `None`, a file in the current directory
    /// named as the gateway suggests). Returns the file written and its size.
    pub async fn download(
        &self,
        mp3_id: &str,
        output: Option<&Path>,
        progress: &ProgressBar,
    ) -> Result<(PathBuf, u64), ApiError> {
        let path = format!("/download/{}", path_segment(mp3_id));
        let response = self
            .send(self.authorized(self.http.get(self.url(&path))))
            .await?;
        if let Some(length) = response.content_length() {
            progress.set_length(length);
        }
        let target = match output {
            Some(path) => path.to_owned(),
            None => {
                PathBuf::from(suggested_name(&response).unwrap_or_else(|| format!("{mp3_id}.mp3")))
            }
        };
        let partial = partial_path(&target);
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(ApiError::file(format!("creating {}", partial.display())))?;
        let mut written = 0u64;
        let mut body = response.bytes_stream();
        let copied: Result<(), ApiError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| self.unreachable(source))?;
                file.write_all(&chunk)
                    .await
                    .map_err(ApiError::file(format!("writing {}", partial.display())))?;
                written += chunk.len() as u64;
                progress.inc(chunk.len() as u64);
            }
            file.sync_all()
                .await
                .map_err(ApiError::file(format!("writing {}", partial.display())))?;
            Ok(())
        }
        .await;
        if let Err(error) = copied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error);
        }
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(ApiError::file(format!("renaming to {}", target.display())))?;
        Ok((target, written))
    }
}

/// The media type to declare for an upload, from its extension (the gateway sniffs the bytes
/// anyway).
pub(crate) fn media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mpg" | "mpeg" | "ts" => "video/mpeg",
        "flv" => "video/x-flv",
        "ogv" | "ogg" => "video/ogg",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

/// The file name from `Content-Disposition`, reduced to a bare name (never a path).
fn suggested_name(response: &Response) -> Option<String> {
    let header = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    let quoted = header.split("filename=\"").nth(1)?.split('"').next()?;
    let name = Path::new(quoted)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// An id as one path segment: anything but id characters is percent-encoded, so an id cannot
/// reach another route.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(
            path_segment("65a1b2c3d4e5f60718293a4b"),
            "65a1b2c3d4e5f60718293a4b"
        );
        assert_eq!(path_segment("../login"), "%2E%2E%2Flogin");
    }

    #[test]
    fn the_mp3_id_comes_from_the_download_url() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "j", "status": "done", "download_url": "/download/abc123"
        }))
        .unwrap();
        assert_eq!(job.mp3_id(), Some("abc123"));
        assert!(job.finished());
    }

    #[test]
    fn uploads_declare_a_media_type_from_the_extension() {
        assert_eq!(media_type(Path::new("clip.MP4")), "video/mp4");
        assert_eq!(media_type(Path::new("noext")), "application/octet-stream");
    }
}
