//! The system under test for the gateway (and, with the workers added, for the pipeline
//! tests of the converter crate): real auth (on MariaDB), real storage (on the
//! MongoDB-wire server or the embedded directory), a real broker, and the gateway itself, all
//! in this process on port 0, talking gRPC and AMQP over loopback.

#![allow(dead_code)]

use clap::Parser;
use clients::{Owner, StorageClient};
use proto::storage::v1 as pb;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::time::Duration;
use test_support::{TempDir, TestBroker, TestMongo, TestMysql, TestServer, rest, temp_dir};

pub const SECRET: &str = "gateway-test-signing-key-of-at-least-32-bytes";
pub const PASSWORD: &str = "correct horse battery";
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// Where storage keeps its files.
#[derive(Debug, Clone, Copy)]
pub enum StorageBackend {
    Mongo,
    Local,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
    pub id: String,
}

/// Options for [`Mesh::start`].
#[derive(Debug, Default)]
pub struct MeshOptions {
    pub local_storage: bool,
    pub gateway_args: Vec<String>,
    pub auth_args: Vec<String>,
    /// Point the gateway at this storage URL instead of the running one (a dead port, say).
    pub storage_url: Option<String>,
    /// Point the gateway at this broker URL instead of the test broker.
    pub amqp_url: Option<String>,
}

/// Everything running, with clients for each part.
pub struct Mesh {
    pub gateway: TestServer,
    pub auth: TestServer,
    pub storage_server: TestServer,
    pub storage: StorageClient,
    pub broker: TestBroker,
    pub video_queue: String,
    pub mp3_queue: String,
    pub http: reqwest::Client,
    _mysql: TestMysql,
    _mongo: Option<TestMongo>,
    _dir: TempDir,
}

fn args(program: &str, pairs: &[(&str, &str)], extra: &[String]) -> Vec<String> {
    let mut args = vec![program.to_owned(), "--log-format".into(), "pretty".into()];
    for (flag, value) in pairs {
        args.push(format!("--{flag}"));
        args.push((*value).to_owned());
    }
    args.extend(extra.iter().cloned());
    args
}

impl Mesh {
    pub async fn start(options: MeshOptions) -> Self {
        test_support::init_tracing();
        let dir = temp_dir();
        let data_dir = dir.path().to_str().unwrap().to_owned();
        let mysql = TestMysql::create().await.unwrap();
        let mongo = if options.local_storage {
            None
        } else {
            Some(TestMongo::create().await.unwrap())
        };
        let broker = TestBroker::create().await.unwrap();
        let video_queue = broker.queue("video");
        let mp3_queue = broker.queue("mp3");

        let auth_args = args(
            "auth",
            &[
                ("data-dir", &data_dir),
                ("ops-listen-addr", "127.0.0.1:0"),
                ("jwt-secret", SECRET),
                ("database-url", &mysql.url()),
                ("admin-email", ADMIN_EMAIL),
                ("admin-password", PASSWORD),
            ],
            &options.auth_args,
        );
        let auth_config = auth::Cli::try_parse_from(auth_args).unwrap().config;
        let mut auth =
            TestServer::start(|listener, shutdown| auth::serve(auth_config, listener, shutdown))
                .await
                .unwrap();
        auth.ready_grpc_channel(Duration::from_secs(30))
            .await
            .unwrap();

        let mut storage_pairs = vec![
            ("data-dir", data_dir.as_str()),
            ("ops-listen-addr", "127.0.0.1:0"),
        ];
        if let Some(mongo) = &mongo {
            storage_pairs.push(("mongodb-uri", mongo.uri()));
            storage_pairs.push(("mongodb-database", mongo.name()));
        }
        let storage_config = storage::Cli::try_parse_from(args("storage", &storage_pairs, &[]))
            .unwrap()
            .config;
        let mut storage_server = TestServer::start(|listener, shutdown| {
            storage::serve(storage_config, listener, shutdown)
        })
        .await
        .unwrap();
        let storage_channel = storage_server
            .ready_grpc_channel(Duration::from_secs(30))
            .await
            .unwrap();
        let storage = StorageClient::new(storage_channel);

        let storage_url = options
            .storage_url
            .clone()
            .unwrap_or_else(|| storage_server.url());
        let amqp_url = options
            .amqp_url
            .clone()
            .unwrap_or_else(|| broker.url().to_owned());
        let gateway_args = args(
            "gateway",
            &[
                ("auth-url", &auth.url()),
                ("storage-url", &storage_url),
                ("amqp-url", &amqp_url),
                ("video-queue", &video_queue),
                ("mp3-queue", &mp3_queue),
            ],
            &options.gateway_args,
        );
        let gateway_config = gateway::Cli::try_parse_from(gateway_args).unwrap().config;
        let gateway = TestServer::start(|listener, shutdown| {
            gateway::serve(gateway_config, listener, shutdown)
        })
        .await
        .unwrap();
        Self {
            gateway,
            auth,
            storage_server,
            storage,
            broker,
            video_queue,
            mp3_queue,
            http: reqwest::Client::new(),
            _mysql: mysql,
            _mongo: mongo,
            _dir: dir,
        }
    }

    /// The directory the services keep local data in.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `/readyz`'s answer once `done` holds for its body, or the last answer after a minute.
    pub async fn readiness_when(&self, done: impl Fn(&Value) -> bool) -> (StatusCode, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let response = self.http.get(self.url("/readyz")).send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            if done(&body) || tokio::time::Instant::now() >= deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    /// Registers `email` and logs in.
    pub async fn user(&self, email: &str) -> User {
        let base_url = self.gateway.url();
        let id = rest::register(&self.http, &base_url, email, PASSWORD).await;
        User {
            token: self.login(email).await,
            id,
        }
    }

    pub async fn login(&self, email: &str) -> String {
        rest::login(&self.http, &self.gateway.url(), email, PASSWORD).await
    }

    /// Uploads `bytes` as the multipart part `file` named `name`.
    pub async fn upload(&self, token: &str, name: &str, bytes: Vec<u8>) -> Response {
        rest::upload(&self.http, &self.gateway.url(), token, name, bytes)
            .await
            .unwrap()
    }

    /// The videos storage holds for `owner`.
    pub async fn stored_videos(&self, owner: &str) -> Vec<pb::FileInfo> {
        self.stored_files(pb::Bucket::Videos, owner).await
    }

    /// Every file of `bucket` storage holds for `owner` (all pages).
    pub async fn stored_files(&self, bucket: pb::Bucket, owner: &str) -> Vec<pb::FileInfo> {
        self.storage
            .all_files(bucket, &Owner::One(owner.into()))
            .await
            .unwrap()
    }

    /// Every job storage holds for `owner` (all pages).
    pub async fn stored_jobs(&self, owner: &str) -> Vec<pb::Job> {
        self.storage
            .all_jobs(&Owner::One(owner.into()))
            .await
            .unwrap()
    }

    /// Stores `bytes` as an MP3 of `owner` and marks `job_id` done with it, as a converter
    /// would.
    pub async fn finish_job(&self, job_id: &str, owner: &str, bytes: &[u8]) -> String {
        let mut upload = self.storage.upload(pb::UploadHeader {
            bucket: pb::Bucket::Mp3s.into(),
            owner_id: owner.into(),
            filename: "holiday clip.mp3".into(),
            content_type: "audio/mpeg".into(),
            job_id: job_id.into(),
        });
        for chunk in bytes.chunks(256 * 1024) {
            assert!(upload.send(chunk.to_vec().into()).await);
        }
        let mp3 = upload.finish().await.unwrap();
        let job = self.storage.job(job_id, &Owner::Any).await.unwrap();
        let claimed = self
            .storage
            .claim(&job, pb::JobState::Queued)
            .await
            .unwrap();
        self.storage.mark_done(&claimed, &mp3.id).await.unwrap();
        mp3.id
    }
}

/// Asserts a JSON error response: its status, its `error.code`, and that it says nothing of
/// the insides.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "for {}", response.url());
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    if let Some(leak) = leaked_detail(message) {
        panic!("leaks {leak}: {message}");
    }
    body
}

/// The first word of the insides (libraries, gRPC statuses) an error message gives away, if any.
pub fn leaked_detail(message: &str) -> Option<&'static str> {
    let message = message.to_lowercase();
    [
        "tonic", "grpc", "status:", "status {", "mongodb", "lapin", "sqlx",
    ]
    .into_iter()
    .find(|leak| message.contains(leak))
}

/// The first bytes of an MP4 (an `ftyp` box) followed by `len` bytes of noise: passes the
/// gateway's sniffing, which is all these tests need of a "video".
pub fn mp4_like(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    bytes.extend(test_support::pseudo_random_bytes(
        len.saturating_sub(bytes.len()),
        seed,
    ));
    bytes
}
