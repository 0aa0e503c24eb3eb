//! The system under test for the gateway, and (with the workers added) for the pipeline: real
//! auth on MariaDB, real storage on the MongoDB-wire server (or the local directory), a real
//! broker, and the gateway itself, all in this process on port 0, talking gRPC and AMQP over
//! loopback. Each mesh has its own database, Mongo database, queue prefix and directory.

use crate::app::Running;
use crate::{TempDir, TestBroker, TestMongo, TestMysql, configs, rest, temp_dir};
use clients::{Owner, StorageClient};
use proto::storage::v1 as pb;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// The password of every account a mesh test makes.
pub const PASSWORD: &str = "correct horse battery";
/// The admin account auth creates at start-up.
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// A change to a service's configuration, made last.
pub type Tweak<C> = Option<Box<dyn FnOnce(&mut C) + Send>>;

/// A [`Tweak`] from a closure.
fn tweak<C>(change: impl FnOnce(&mut C) + Send + 'static) -> Tweak<C> {
    Some(Box::new(change))
}

/// How [`Mesh::start`] differs from the usual mesh.
#[derive(Default)]
pub struct MeshOptions {
    /// Storage on the local directory instead of GridFS.
    pub local_storage: bool,
    /// Point the gateway at this storage URL instead of the running one (a dead port, say).
    pub storage_url: Option<String>,
    /// Point the gateway at this broker URL instead of the test broker.
    pub amqp_url: Option<String>,
    /// A change to the gateway's configuration.
    pub gateway: Tweak<gateway::Config>,
    /// A change to auth's configuration.
    pub auth: Tweak<auth::Config>,
    /// A change to storage's configuration.
    pub storage: Tweak<storage::Config>,
    /// The client the mesh's helpers call the gateway with, instead of a plain one (one that
    /// trusts the test's certificate authority, for a gateway serving HTTPS).
    pub http: Option<reqwest::Client>,
}

impl MeshOptions {
    /// The usual mesh, but with `change` made to the gateway's configuration.
    pub fn gateway(change: impl FnOnce(&mut gateway::Config) + Send + 'static) -> Self {
        Self {
            gateway: tweak(change),
            ..Self::default()
        }
    }

    /// The usual mesh, but with `change` made to auth's configuration.
    pub fn auth(change: impl FnOnce(&mut auth::Config) + Send + 'static) -> Self {
        Self {
            auth: tweak(change),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for MeshOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshOptions")
            .field("local_storage", &self.local_storage)
            .field("storage_url", &self.storage_url)
            .field("amqp_url", &self.amqp_url)
            .field("gateway", &self.gateway.is_some())
            .field("auth", &self.auth.is_some())
            .field("storage", &self.storage.is_some())
            .field("http", &self.http.is_some())
            .finish()
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    /// The account's e-mail.
    pub email: String,
    /// The account's id.
    pub id: String,
    /// A bearer token.
    pub token: String,
}

/// Everything running, with clients for each part.
#[derive(Debug)]
pub struct Mesh {
    /// The REST edge.
    pub gateway: Running<gateway::App>,
    /// Accounts.
    pub auth: Running<auth::App>,
    /// Files and jobs.
    pub storage_service: Running<storage::App>,
    /// A client of storage, straight to its port.
    pub storage: StorageClient,
    /// The broker, behind this mesh's queue prefix.
    pub broker: TestBroker,
    /// The video queue's name.
    pub video_queue: String,
    /// The mp3 queue's name.
    pub mp3_queue: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    work_dir: TempDir,
    _mysql: TestMysql,
    _mongo: Option<TestMongo>,
    dir: TempDir,
}

impl Mesh {
    /// Starts auth, storage and the gateway on this mesh's own infrastructure.
    pub async fn start(options: MeshOptions) -> Self {
        crate::init_tracing();
        let dir = temp_dir();
        let mysql = TestMysql::create().await.unwrap();
        let mongo = if options.local_storage {
            None
        } else {
            Some(TestMongo::create().await.unwrap())
        };
        let broker = TestBroker::create().await.unwrap();
        let queues = broker.queues();
        let (video_queue, mp3_queue) = (queues.video_queue, queues.mp3_queue);

        let mut auth_config = auth::Config {
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(PASSWORD.into()),
            ..configs::auth(dir.path(), Some(&mysql))
        };
        if let Some(change) = options.auth {
            change(&mut auth_config);
        }
        let auth = Running::<auth::App>::start(auth_config).await.unwrap();
        let mut storage_config = configs::storage(dir.path(), mongo.as_ref());
        if let Some(change) = options.storage {
            change(&mut storage_config);
        }
        let storage_service = Running::<storage::App>::start(storage_config)
            .await
            .unwrap();
        let storage = StorageClient::new(storage_service.grpc_channel().await.unwrap());

        let mut broker_config = configs::amqp(&broker, dir.path());
        if let Some(url) = options.amqp_url {
            broker_config.amqp_url = Some(url.into());
        }
        let storage_url = options.storage_url.unwrap_or_else(|| storage_service.url());
        let mut gateway_config = configs::gateway(&auth.url(), &storage_url, broker_config);
        if let Some(change) = options.gateway {
            change(&mut gateway_config);
        }
        let gateway = Running::<gateway::App>::start(gateway_config)
            .await
            .unwrap();
        Self {
            gateway,
            auth,
            storage_service,
            storage,
            broker,
            video_queue,
            mp3_queue,
            http: options.http.unwrap_or_default(),
            work_dir: temp_dir(),
            _mysql: mysql,
            _mongo: mongo,
            dir,
        }
    }

    /// The directory the services keep local data in.
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    /// The broker configuration the gateway uses (the workers' starting point).
    pub fn broker_config(&self) -> messaging::BrokerConfig {
        self.gateway.config().broker.clone()
    }

    /// A converter's configuration for this mesh (its temp files in the mesh's work dir).
    pub fn converter_config(&self) -> converter::Config {
        configs::converter(
            &self.storage_service.url(),
            self.broker_config(),
            self.work_dir.path(),
        )
    }

    /// A notifier's configuration for this mesh, mailing to `smtp_url`.
    pub fn notifier_config(&self, smtp_url: &str) -> notifier::Config {
        configs::notifier(
            &self.storage_service.url(),
            self.broker_config(),
            Some(smtp_url),
        )
    }

    /// Where converters of this mesh keep their temp files.
    pub fn work_dir(&self) -> &std::path::Path {
        self.work_dir.path()
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

    /// Registers `email` and logs in.
    pub async fn user(&self, email: &str) -> User {
        let base_url = self.gateway.url();
        let id = rest::register(&self.http, &base_url, email, PASSWORD).await;
        User {
            email: email.to_owned(),
            token: self.login(email).await,
            id,
        }
    }

    /// A token for `email`.
    pub async fn login(&self, email: &str) -> String {
        rest::login(&self.http, &self.gateway.url(), email, PASSWORD).await
    }

    /// Uploads `bytes` as the multipart part `file` named `name`.
    pub async fn upload(&self, token: &str, name: &str, bytes: Vec<u8>) -> Response {
        rest::upload(&self.http, &self.gateway.url(), token, name, bytes)
            .await
            .unwrap()
    }

    /// [`Mesh::upload`] with audio options in the query and as multipart fields.
    pub async fn upload_with_options(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
        query: &[(&str, &str)],
        fields: &[(&str, &str)],
    ) -> Response {
        rest::upload_with_options(
            &self.http,
            &self.gateway.url(),
            token,
            name,
            bytes,
            query,
            fields,
        )
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

    /// A job, whoever owns it.
    pub async fn job(&self, job_id: &str) -> pb::Job {
        self.storage.job(job_id, &Owner::Any).await.unwrap()
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
        let claimed = self
            .storage
            .claim(&self.job(job_id).await, pb::JobState::Queued)
            .await
            .unwrap();
        self.storage.mark_done(&claimed, &mp3.id).await.unwrap();
        mp3.id
    }

    /// Messages waiting in `queue` (a passive declare's count, which RabbitMQ updates a moment
    /// after a message settles: poll it).
    pub async fn waiting(&self, queue: &str) -> u32 {
        let connection = self.broker.connect().await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "ok".into()).await;
        declared.message_count()
    }
}
