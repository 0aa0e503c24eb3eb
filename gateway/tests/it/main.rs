//! The gateway's integration tests, in one binary (one link instead of one per file):
//!
//! - [`router`]: what the gateway answers on its own, in process, without a backend;
//! - [`api`]: the REST API end to end, on the mesh (real auth, storage, MariaDB, the
//!   MongoDB-wire server, RabbitMQ);
//! - [`idempotency`]: `Idempotency-Key` on uploads, on both storage backends;
//! - [`hostile_input`]: a table of hostile requests against the mesh;
//! - [`openapi_conformance`]: schemathesis, generating requests from `/openapi.json`;
//! - [`tus`]: resumable uploads (tus 1.0) at the HTTP level;
//! - [`webhooks`]: webhook endpoints, and the URLs refused when they are registered;
//! - [`tls`]: HTTPS, and a certificate renewed on disk while a download runs;
//! - [`grpc_tls`]: mutual TLS between the gateway and auth and storage; [`amqps`]: the queue
//!   over TLS.

mod amqps;
mod api;
mod grpc_tls;
mod hostile_input;
mod idempotency;
mod openapi_conformance;
mod router;
mod support;
mod tls;
mod tus;
mod webhooks;
