//! Typed configurations for services under test: each starts from the service's documented
//! defaults (the environment ignored), listens on port 0 of 127.0.0.1, logs readably, and is
//! pointed at the test's own slice of the infrastructure. Tests change fields on what these
//! return; nothing is assembled from argument strings.

use crate::{TestBroker, TestMongo, TestMysql};
use messaging::{BrokerConfig, RetryConfig, WorkerLinks};
use service_kit::config::{ApiAddrs, LogFormat, OpsAddr, ServiceConfig, TelemetryConfig};
use std::net::SocketAddr;
use std::path::Path;

/// The HS256 key every test's auth signs with.
pub const JWT_SECRET: &str = "test-signing-key-that-is-at-least-32-bytes-long";

/// Port 0 of 127.0.0.1: the system picks a free port when the service binds.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Readable logs, at the level `RUST_LOG` asks for (warnings otherwise), captured per test.
pub fn telemetry() -> TelemetryConfig {
    TelemetryConfig {
        log_format: LogFormat::Pretty,
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    }
}

/// Auth with its own data directory and a fixed signing key, on `mysql` when given (else the
/// embedded SQLite file in `data_dir`).
pub fn auth(data_dir: &Path, mysql: Option<&TestMysql>) -> auth::Config {
    auth::Config {
        addrs: ApiAddrs {
            api: any_port(),
            ops: any_port(),
        },
        data_dir: data_dir.to_owned(),
        database_url: mysql.map(|mysql| mysql.url().into()),
        jwt_secret: Some(JWT_SECRET.into()),
        telemetry: telemetry(),
        ..auth::Config::defaults()
    }
}

/// Storage on `mongo` when given (GridFS), else the local directory in `data_dir`.
pub fn storage(data_dir: &Path, mongo: Option<&TestMongo>) -> storage::Config {
    storage::Config {
        addrs: ApiAddrs {
            api: any_port(),
            ops: any_port(),
        },
        data_dir: data_dir.to_owned(),
        mongodb_uri: mongo.map(|mongo| mongo.uri().into()),
        mongodb_database: mongo.map_or_else(|| "mp3converter".into(), |m| m.name().to_owned()),
        telemetry: telemetry(),
        ..storage::Config::defaults()
    }
}

/// The test broker's queues (RabbitMQ, behind the test's own prefix).
pub fn amqp(broker: &TestBroker, data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        amqp_url: Some(broker.url().into()),
        data_dir: data_dir.to_owned(),
        queues: broker.queues(),
        ..embedded(data_dir)
    }
}

/// The embedded queue file in `data_dir`.
pub fn embedded(data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        amqp_url: None,
        data_dir: data_dir.to_owned(),
        ..gateway::Config::defaults().broker
    }
}

/// The gateway, calling auth and storage at these URLs and queueing on `broker`.
pub fn gateway(auth_url: &str, storage_url: &str, broker: BrokerConfig) -> gateway::Config {
    gateway::Config {
        listen_addr: any_port(),
        auth_url: auth_url.to_owned(),
        storage_url: storage_url.to_owned(),
        broker,
        telemetry: telemetry(),
        ..gateway::Config::defaults()
    }
}

/// What a worker is linked to: storage at `storage_url`, the queues of `broker`, the default
/// retry policy.
fn links(storage_url: &str, broker: BrokerConfig) -> WorkerLinks {
    WorkerLinks {
        storage_url: storage_url.to_owned(),
        broker,
        retry: RetryConfig::default(),
        grpc_tls: Default::default(),
    }
}

/// A converter on `broker`, storing through `storage_url`, with its temp files in `work_dir`.
pub fn converter(storage_url: &str, broker: BrokerConfig, work_dir: &Path) -> converter::Config {
    converter::Config {
        ops: OpsAddr { ops: any_port() },
        links: links(storage_url, broker),
        work_dir: work_dir.to_owned(),
        telemetry: telemetry(),
        ..converter::Config::defaults()
    }
}

/// A notifier on `broker`, mailing to `smtp_url` (or to the outbox in the broker's data
/// directory when `None`).
pub fn notifier(
    storage_url: &str,
    broker: BrokerConfig,
    smtp_url: Option<&str>,
) -> notifier::Config {
    notifier::Config {
        ops: OpsAddr { ops: any_port() },
        links: links(storage_url, broker),
        smtp_url: smtp_url.map(Into::into),
        public_base_url: "https://mp3.example.com".into(),
        telemetry: telemetry(),
        ..notifier::Config::defaults()
    }
}
