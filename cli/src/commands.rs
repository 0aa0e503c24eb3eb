//! The client commands: each calls the API, then prints a line for people or, with `--json`,
//! the gateway's JSON for scripts. Failures carry an exit code (see the command's help).

use crate::api::{Api, ApiError, Job};
use crate::session::{self, Session};
use crate::{ClientCommand, progress};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The gateway when neither `--url` nor a saved login names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// How often `--wait` asks for the job's state.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Failed polls in a row before `--wait` gives up (the gateway may restart meanwhile).
const MAX_POLL_FAILURES: u32 = 60;

/// An e-mail and a password.
#[derive(Debug, Args)]
pub struct Credentials {
    /// The account's e-mail address.
    pub email: String,
    /// The password (prefer MP3CONVERTER_PASSWORD, --password-stdin or the prompt: a flag shows
    /// in the process list).
    #[arg(long, env = "MP3CONVERTER_PASSWORD", hide_env_values = true)]
    pub password: Option<service_kit::Secret>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
}

/// `upload`'s arguments.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The video to convert.
    pub file: PathBuf,
    /// Follow the job to its end, then download the MP3.
    #[arg(long)]
    pub wait: bool,
    /// Where `--wait` saves the audio file (default: the name the gateway suggests).
    #[arg(long, short, requires = "wait")]
    pub output: Option<PathBuf>,
    /// What to make (checked here before a byte is sent; `mp3converter presets` lists the
    /// presets).
    #[command(flatten)]
    pub audio: AudioArgs,
}

/// The audio options of an upload, as the gateway takes them (see `POST /upload` in its
/// OpenAPI document).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Audio options")]
pub struct AudioArgs {
    /// A preset (music, podcast, voice, archive); the options below override its own.
    #[arg(long)]
    pub preset: Option<String>,
    /// mp3 (the default), m4a, opus or flac.
    #[arg(long)]
    pub format: Option<String>,
    /// Variable-bitrate quality, 0 (best) to 9 (smallest).
    #[arg(long)]
    pub quality: Option<String>,
    /// Constant bitrate, kb/s.
    #[arg(long)]
    pub bitrate: Option<String>,
    /// Sample rate, Hz.
    #[arg(long)]
    pub sample_rate: Option<String>,
    /// 1 (mono) or 2 (stereo).
    #[arg(long)]
    pub channels: Option<String>,
    /// Keep from here: seconds (90.5) or HH:MM:SS.mmm.
    #[arg(long)]
    pub start: Option<String>,
    /// Keep up to here: seconds or HH:MM:SS.mmm.
    #[arg(long)]
    pub end: Option<String>,
    /// Normalise the loudness: to -16 LUFS, or to the target given (`--normalize=-14`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", allow_hyphen_values = true)]
    pub normalize: Option<String>,
    /// The true-peak ceiling with --normalize, dBTP (default -1.5).
    #[arg(long, allow_hyphen_values = true)]
    pub true_peak: Option<String>,
    /// auto (a frame of the video, the default) or none.
    #[arg(long)]
    pub cover: Option<String>,
    /// An MP3's ID3v2 version: 2.3 (the default) or 2.4.
    #[arg(long)]
    pub id3v2: Option<String>,
    /// Title tag (default: the video's own, else its file name).
    #[arg(long)]
    pub title: Option<String>,
    /// Artist tag.
    #[arg(long)]
    pub artist: Option<String>,
    /// Album tag.
    #[arg(long)]
    pub album: Option<String>,
    /// Year (2024) or date (2024-05-31).
    #[arg(long)]
    pub year: Option<String>,
    /// Track number (3 or 3/12).
    #[arg(long)]
    pub track: Option<String>,
    /// Genre tag.
    #[arg(long)]
    pub genre: Option<String>,
    /// Comment tag.
    #[arg(long)]
    pub comment: Option<String>,
}

impl AudioArgs {
    /// The options given, as the gateway's query parameters.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("preset", &self.preset),
            ("format", &self.format),
            ("quality", &self.quality),
            ("bitrate", &self.bitrate),
            ("sample_rate", &self.sample_rate),
            ("channels", &self.channels),
            ("start", &self.start),
            ("end", &self.end),
            ("normalize", &self.normalize),
            ("true_peak", &self.true_peak),
            ("cover", &self.cover),
            ("id3v2", &self.id3v2),
            ("title", &self.title),
            ("artist", &self.artist),
            ("album", &self.album),
            ("year", &self.year),
            ("track", &self.track),
            ("genre", &self.genre),
            ("comment", &self.comment),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|value| (name, value)))
        .collect()
    }
}

/// `webhooks`' subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// List your endpoints.
    List,
    /// Register an endpoint; its signing secret is printed once.
    Add {
        /// Where messages go (http or https, a public address). (Not `url`: that name is the
        /// global `--url` of the gateway.)
        #[arg(value_name = "URL")]
        endpoint_url: String,
        /// An event type to receive (`job.succeeded`, `job.failed`); repeat for more; none:
        /// all.
        #[arg(long = "event")]
        events: Vec<String>,
        /// Your words for it.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one endpoint.
    Show {
        /// The endpoint's id.
        id: String,
    },
    /// Delete an endpoint.
    Delete {
        /// The endpoint's id.
        id: String,
    },
    /// Send an endpoint a signed `ping` message, as deliveries are sent.
    Test {
        /// The endpoint's id.
        id: String,
    },
    /// List an endpoint's newest delivery attempts.
    Deliveries {
        /// The endpoint's id.
        id: String,
    },
    /// Send one logged message again (same webhook-id and body).
    Redeliver {
        /// The endpoint's id.
        id: String,
        /// The message's webhook-id, from `deliveries`.
        message_id: String,
    },
    /// Turn a disabled endpoint back on.
    Enable {
        /// The endpoint's id.
        id: String,
    },
    /// Give an endpoint a new signing secret (the old one signs beside it for 24 hours).
    RotateSecret {
        /// The endpoint's id.
        id: String,
    },
}

/// `download`'s arguments.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// A job's id (its MP3 is fetched) or an MP3's id.
    pub id: String,
    /// Where to save it (default: the name the gateway suggests, in this directory).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// A command that failed: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    exit: u8,
    code: String,
    message: String,
}

impl Failure {
    fn new(exit: u8, code: &str, message: impl Into<String>) -> Self {
        Self {
            exit,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn not_logged_in() -> Self {
        Self::new(
            3,
            "not_logged_in",
            "not logged in: run `mp3converter login EMAIL` first",
        )
    }

    /// Prints the failure (as JSON on stdout with `--json`, else on stderr) and gives the exit
    /// code.
    pub fn report(self, json: bool) -> ExitCode {
        if json {
            println!(
                "{}",
                json!({ "error": { "code": self.code, "message": self.message } })
            );
        } else {
            eprintln!("error: {}", self.message);
        }
        ExitCode::from(self.exit)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::new(1, "failed", format!("{error:#}"))
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        match &error {
            ApiError::Refused { code, .. } if error.is_unauthorized() => {
                let message = if code == "invalid_credentials" || code == "unauthorized" {
                    format!("{error}; run `mp3converter login EMAIL` again if your login expired")
                } else {
                    error.to_string()
                };
                Self::new(3, code, message)
            }
            ApiError::Refused { code, .. } => Self::new(1, code, error.to_string()),
            ApiError::Unreachable { .. } => Self::new(1, "unreachable", error.to_string()),
            ApiError::File { .. } => Self::new(1, "file", error.to_string()),
            ApiError::Unexpected(_) => Self::new(1, "unexpected", error.to_string()),
        }
    }
}

/// What every client command works with.
struct Context {
    dir: PathBuf,
    url: Option<String>,
    /// Trusting MP3CONVERTER_CA_FILE too, when it is set.
    http: reqwest::Client,
    session: Option<Session>,
    json: bool,
}

impl Context {
    /// The gateway: `--url`, else the saved login's, else the default.
    fn base(&self) -> String {
        self.url
            .clone()
            .or_else(|| self.session.as_ref().map(|s| s.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned())
    }

    fn anonymous(&self) -> Api {
        Api::new(self.http.clone(), &self.base(), None)
    }

    fn logged_in(&self) -> Result<Api, Failure> {
        let session = self.session.as_ref().ok_or_else(Failure::not_logged_in)?;
        if self
            .url
            .as_ref()
            .is_some_and(|url| url.trim_end_matches('/') != session.url)
        {
            return Err(Failure::new(
                3,
                "not_logged_in",
                format!(
                    "the saved login is for {}: log in to this gateway first",
                    session.url
                ),
            ));
        }
        Ok(Api::new(
            self.http.clone(),
            &session.url,
            Some(session.access_token.clone()),
        ))
    }

    /// Prints `human` for people, `value` for scripts.
    fn print(&self, human: impl FnOnce() -> String, value: &Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

/// The HTTP client of every command: the usual trust roots, and the authority in `ca_file`
/// (`up --tls` makes one) when given.
async fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, Failure> {
    let mut builder = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let refused = |why: String| {
            Failure::new(
                1,
                "input",
                format!("MP3CONVERTER_CA_FILE {}: {why}", path.display()),
            )
        };
        let pem = tokio::fs::read(path)
            .await
            .map_err(|error| refused(error.to_string()))?;
        let ca =
            reqwest::Certificate::from_pem(&pem).map_err(|error| refused(error.to_string()))?;
        builder = builder.add_root_certificate(ca);
    }
    builder
        .build()
        .map_err(|error| Failure::new(1, "internal", format!("the HTTP client: {error}")))
}

/// Runs one client command.
pub async fn run(
    command: ClientCommand,
    url: Option<String>,
    config_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let dir = session::config_dir(config_dir)?;
    let context = Context {
        session: session::load(&dir)?,
        dir,
        url,
        http: http_client(ca_file.as_deref()).await?,
        json,
    };
    match command {
        ClientCommand::Register(credentials) => register(&context, credentials).await,
        ClientCommand::Login(credentials) => login(&context, credentials).await,
        ClientCommand::Upload(args) => upload(&context, *args).await,
        ClientCommand::Jobs => jobs(&context).await,
        ClientCommand::Status { job_id } => status(&context, &job_id).await,
        ClientCommand::Download(args) => download(&context, args).await,
        ClientCommand::Presets => presets(&context).await,
        ClientCommand::Webhooks(command) => webhooks(&context, command).await,
    }
}

/// `presets`: what the gateway offers.
async fn presets(context: &Context) -> Result<(), Failure> {
    let listed = context.anonymous().presets().await?;
    context.print(
        || {
            listed["presets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|preset| {
                    format!(
                        "{:<8} {}",
                        preset["name"].as_str().unwrap_or_default(),
                        preset["description"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
        &listed,
    );
    Ok(())
}

fn password(credentials: &Credentials) -> Result<String, Failure> {
    if let Some(password) = &credentials.password {
        return Ok(password.expose().to_owned());
    }
    let stdin = std::io::stdin();
    if !credentials.password_stdin && stdin.is_terminal() {
        return rpassword::prompt_password("Password: ")
            .map_err(|error| Failure::new(1, "input", format!("reading the password: {error}")));
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|error| Failure::new(1, "input", format!("reading the password: {error}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Failure::new(
            2,
            "no_password",
            "no password given: use --password-stdin, MP3CONVERTER_PASSWORD or the prompt",
        ));
    }
    Ok(password)
}

async fn register(context: &Context, credentials: Credentials) -> Result<(), Failure> {
    let password = password(&credentials)?;
    let account = context
        .anonymous()
        .register(&credentials.email, &password)
        .await?;
    context.print(
        || {
            format!(
                "registered {} (id {}); next: mp3converter login {}",
                account["email"].as_str().unwrap_or(&credentials.email),
                account["id"].as_str().unwrap_or("?"),
                credentials.email
            )
        },
        &account,
    );
    Ok(())
}

async fn login(context: &Context, credentials: Credentials) -> Result<(), Failure> {
    let password = password(&credentials)?;
    let api = context.anonymous();
    let token = api.login(&credentials.email, &password).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let session = Session {
        url: api.base().to_owned(),
        email: credentials.email.clone(),
        access_token: token.access_token,
        expires_at: now.saturating_add(token.expires_in),
    };
    let file = session::save(&context.dir, &session)?;
    context.print(
        || {
            format!(
                "logged in as {} at {} (the token, valid for {} h, is in {})",
                session.email,
                session.url,
                token.expires_in / 3600,
                file.display()
            )
        },
        &json!({ "email": session.email, "url": session.url, "expires_in": token.expires_in, "token_file": file }),
    );
    Ok(())
}

async fn upload(context: &Context, args: UploadArgs) -> Result<(), Failure> {
    let options = args.audio.pairs();
    // The gateway's own rules, here: a wrong option costs no upload of the whole video.
    audio_options::parse_options(options.iter().copied())
        .map_err(|error| Failure::new(2, "invalid_option", format!("invalid option {error}")))?;
    let api = context.logged_in()?;
    let bar = progress::transfer("uploading", !context.json);
    let records = crate::resumable::UploadRecords::in_dir(&context.dir);
    let accepted = api.upload(&args.file, &options, &bar, &records).await;
    bar.finish_and_clear();
    let accepted = accepted?;
    let job_id = accepted["job_id"]
        .as_str()
        .ok_or_else(|| Failure::new(1, "unexpected", "the gateway's answer has no job_id"))?
        .to_owned();
    if !args.wait {
        context.print(
            || format!("uploaded {}: job {job_id} is queued; follow it with `mp3converter status {job_id}`", args.file.display()),
            &accepted,
        );
        return Ok(());
    }
    if !context.json {
        eprintln!("uploaded {}: job {job_id}", args.file.display());
    }
    let (job_value, job) = follow(context, &api, &job_id).await?;
    if job.status == "failed" {
        let reason = job.error.unwrap_or_else(|| "no reason given".into());
        return Err(Failure::new(
            4,
            "conversion_failed",
            format!("the conversion failed: {reason}"),
        ));
    }
    let mp3_id = job
        .mp3_id()
        .ok_or_else(|| Failure::new(1, "unexpected", "the job is done but has no MP3"))?;
    let (file, bytes) = fetch(context, &api, mp3_id, args.output.as_deref()).await?;
    context.print(
        || format!("saved {} ({bytes} bytes)", file.display()),
        &json!({ "upload": accepted, "job": job_value, "file": file, "bytes": bytes }),
    );
    Ok(())
}

/// Polls the job until it ends, showing its progress.
async fn follow(context: &Context, api: &Api, job_id: &str) -> Result<(Value, Job), Failure> {
    let bar = progress::conversion(!context.json);
    let mut failures = 0;
    loop {
        match api.job(job_id).await {
            Ok((value, job)) => {
                failures = 0;
                bar.set_message(job.status.clone());
                bar.set_position(u64::from(job.progress_percent.min(100)));
                if job.finished() {
                    bar.finish_and_clear();
                    return Ok((value, job));
                }
            }
            // The gateway or a service may be restarting: keep asking for a while.
            Err(error @ (ApiError::Unreachable { .. } | ApiError::Refused { .. }))
                if failures < MAX_POLL_FAILURES && is_passing(&error) =>
            {
                failures += 1;
                bar.set_message("waiting");
            }
            Err(error) => {
                bar.finish_and_clear();
                return Err(error.into());
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn is_passing(error: &ApiError) -> bool {
    match error {
        ApiError::Unreachable { .. } => true,
        ApiError::Refused { status, .. } => status.is_server_error() || status.as_u16() == 429,
        _ => false,
    }
}

async fn fetch(
    context: &Context,
    api: &Api,
    mp3_id: &str,
    output: Option<&std::path::Path>,
) -> Result<(PathBuf, u64), Failure> {
    let bar = progress::transfer("downloading", !context.json);
    let fetched = api.download(mp3_id, output, &bar).await;
    bar.finish_and_clear();
    Ok(fetched?)
}

/// `webhooks …`: the caller's endpoints.
async fn webhooks(context: &Context, command: WebhookCommand) -> Result<(), Failure> {
    let api = context.logged_in()?;
    match command {
        WebhookCommand::List => {
            let list = api.webhooks().await?;
            context.print(
                || {
                    let endpoints = list["endpoints"].as_array().cloned().unwrap_or_default();
                    if endpoints.is_empty() {
                        return "no webhook endpoints yet: mp3converter webhooks add URL".into();
                    }
                    let mut lines = vec![format!("{:<24}  {:<27}  {}", "ID", "EVENTS", "URL")];
                    for endpoint in endpoints {
                        lines.push(format!(
                            "{:<24}  {:<27}  {}",
                            endpoint["id"].as_str().unwrap_or("?"),
                            event_list(&endpoint),
                            endpoint["url"].as_str().unwrap_or("?"),
                        ));
                    }
                    lines.join("\n")
                },
                &list,
            );
        }
        WebhookCommand::Add {
            endpoint_url,
            events,
            description,
        } => {
            let added = api
                .add_webhook(&endpoint_url, &events, &description)
                .await?;
            context.print(
                || {
                    format!(
                        "webhook endpoint {} → {} ({})\nsigning secret: {}\n\
                         (shown only now: keep it to verify the webhook-signature of each message)",
                        added["id"].as_str().unwrap_or("?"),
                        added["url"].as_str().unwrap_or("?"),
                        event_list(&added),
                        added["secret"].as_str().unwrap_or("?"),
                    )
                },
                &added,
            );
        }
        WebhookCommand::Show { id } => {
            let endpoint = api.webhook(&id).await?;
            context.print(
                || {
                    let mut text = format!(
                        "webhook endpoint {} → {} ({}), since {}",
                        endpoint["id"].as_str().unwrap_or("?"),
                        endpoint["url"].as_str().unwrap_or("?"),
                        event_list(&endpoint),
                        endpoint["created_at"].as_str().unwrap_or("?"),
                    );
                    if let Some(until) = endpoint["previous_secret_expires_at"].as_str() {
                        text.push_str(&format!("; the previous secret signs too until {until}"));
                    }
                    if let Some(reason) = endpoint["disabled"]["reason"].as_str() {
                        text.push_str(&format!(
                            "\nDISABLED: {reason}; `mp3converter webhooks enable {}` turns it back on",
                            endpoint["id"].as_str().unwrap_or("?")
                        ));
                    }
                    text
                },
                &endpoint,
            );
        }
        WebhookCommand::Delete { id } => {
            api.delete_webhook(&id).await?;
            context.print(
                || format!("webhook endpoint {id} deleted"),
                &serde_json::json!({ "deleted": id }),
            );
        }
        WebhookCommand::Test { id } => {
            let queued = api.test_webhook(&id).await?;
            context.print(
                || {
                    format!(
                        "ping {} queued for webhook endpoint {id}",
                        queued["message_id"].as_str().unwrap_or("?")
                    )
                },
                &queued,
            );
        }
        WebhookCommand::Deliveries { id } => {
            let log = api.webhook_deliveries(&id).await?;
            context.print(
                || {
                    let attempts = log["deliveries"].as_array().cloned().unwrap_or_default();
                    if attempts.is_empty() {
                        return format!("no deliveries to webhook endpoint {id} yet");
                    }
                    let mut lines = vec![format!(
                        "{:<30}  {:<36}  {:<13}  {:>6}  {}",
                        "WHEN", "MESSAGE", "TYPE", "MS", "RESULT"
                    )];
                    for attempt in attempts {
                        let result = match (
                            attempt["delivered"].as_bool(),
                            attempt["status_code"].as_u64(),
                        ) {
                            (Some(true), Some(status)) => format!("delivered ({status})"),
                            (_, Some(status)) => format!("failed ({status})"),
                            _ => format!("failed: {}", attempt["error"].as_str().unwrap_or("?")),
                        };
                        let result = if attempt["given_up"].as_bool() == Some(true) {
                            format!("{result}, given up")
                        } else {
                            result
                        };
                        lines.push(format!(
                            "{:<30}  {:<36}  {:<13}  {:>6}  {result}",
                            attempt["attempted_at"].as_str().unwrap_or("?"),
                            attempt["message_id"].as_str().unwrap_or("?"),
                            attempt["event_type"].as_str().unwrap_or("?"),
                            attempt["duration_ms"].as_u64().unwrap_or(0),
                        ));
                    }
                    lines.join("\n")
                },
                &log,
            );
        }
        WebhookCommand::Redeliver { id, message_id } => {
            let queued = api.redeliver_webhook(&id, &message_id).await?;
            context.print(
                || format!("message {message_id} queued again for webhook endpoint {id}"),
                &queued,
            );
        }
        WebhookCommand::Enable { id } => {
            let endpoint = api.enable_webhook(&id).await?;
            context.print(|| format!("webhook endpoint {id} enabled"), &endpoint);
        }
        WebhookCommand::RotateSecret { id } => {
            let rotated = api.rotate_webhook_secret(&id).await?;
            context.print(
                || {
                    format!(
                        "new signing secret: {}\n(shown only now; the previous one signs beside it until {})",
                        rotated["secret"].as_str().unwrap_or("?"),
                        rotated["previous_secret_expires_at"]
                            .as_str()
                            .unwrap_or("now"),
                    )
                },
                &rotated,
            );
        }
    }
    Ok(())
}

/// An endpoint's event types, for people.
fn event_list(endpoint: &Value) -> String {
    let events: Vec<&str> = endpoint["events"]
        .as_array()
        .map(|events| events.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if events.is_empty() {
        "every event".into()
    } else {
        events.join(", ")
    }
}

async fn jobs(context: &Context) -> Result<(), Failure> {
    let list = context.logged_in()?.jobs().await?;
    context.print(
        || {
            let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
            if jobs.is_empty() {
                return "no jobs yet: mp3converter upload VIDEO".into();
            }
            let mut lines = vec![format!(
                "{:<24}  {:<10}  {:>4}  {}",
                "JOB", "STATUS", "%", "FILE"
            )];
            for job in jobs {
                lines.push(format!(
                    "{:<24}  {:<10}  {:>4}  {}",
                    job["id"].as_str().unwrap_or("?"),
                    job["status"].as_str().unwrap_or("?"),
                    job["progress_percent"].as_u64().unwrap_or(0),
                    job["original_filename"].as_str().unwrap_or(""),
                ));
            }
            lines.join("\n")
        },
        &list,
    );
    Ok(())
}

async fn status(context: &Context, job_id: &str) -> Result<(), Failure> {
    let (value, job) = context.logged_in()?.job(job_id).await?;
    context.print(
        || {
            let mut line = format!("job {} ({}): {}", job.id, job.original_filename, job.status);
            match job.status.as_str() {
                "converting" => line.push_str(&format!(" {}%", job.progress_percent)),
                "done" => line.push_str(&format!(
                    "; download with `mp3converter download {}`",
                    job.id
                )),
                "failed" => line.push_str(&format!(
                    ": {}",
                    job.error.as_deref().unwrap_or("no reason given")
                )),
                _ => {}
            }
            line
        },
        &value,
    );
    Ok(())
}

async fn download(context: &Context, args: DownloadArgs) -> Result<(), Failure> {
    let api = context.logged_in()?;
    // A job's id names its MP3; anything else is taken as the MP3's own id.
    let mp3_id = match api.job(&args.id).await {
        Ok((_, job)) => match job.mp3_id() {
            Some(id) => id.to_owned(),
            None if job.status == "failed" => {
                return Err(Failure::new(
                    4,
                    "conversion_failed",
                    format!(
                        "job {} failed: {}",
                        job.id,
                        job.error.as_deref().unwrap_or("no reason given")
                    ),
                ));
            }
            None => {
                return Err(Failure::new(
                    1,
                    "not_ready",
                    format!(
                        "job {} is {}: no MP3 yet (try `mp3converter upload --wait`, or later)",
                        job.id, job.status
                    ),
                ));
            }
        },
        Err(ApiError::Refused { status, .. })
            if status.as_u16() == 404 || status.as_u16() == 400 =>
        {
            args.id.clone()
        }
        Err(error) => return Err(error.into()),
    };
    let (file, bytes) = fetch(context, &api, &mp3_id, args.output.as_deref()).await?;
    context.print(
        || format!("saved {} ({bytes} bytes)", file.display()),
        &json!({ "mp3_id": mp3_id, "file": file, "bytes": bytes }),
    );
    Ok(())
}
