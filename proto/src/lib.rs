//! The contracts between mp3converter's services, generated from the `.proto` files in this
//! crate's folder (the source of truth; `buf lint` checks them).
//!
//! - [`auth::v1`]: `AuthService` (register, login, validate tokens).
//! - [`storage::v1`]: `StorageService` (streamed files and job records).
//! - [`events::v1`]: the messages that travel on RabbitMQ; see `events.proto` for their wire
//!   encoding.
//!
//! [`FILE_DESCRIPTOR_SET`] is embedded so every server can answer gRPC reflection.

#![forbid(unsafe_code)]

/// `mp3converter.auth.v1`
pub mod auth {
    /// Version 1 of the auth contract.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("mp3converter.auth.v1");
    }
}

/// `mp3converter.storage.v1`
pub mod storage {
    /// Version 1 of the storage contract.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("mp3converter.storage.v1");

        /// The longest `CreateJobRequest.idempotency_key`, in bytes (printable ASCII only).
        pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
    }
}

/// `mp3converter.events.v1`
pub mod events {
    /// Version 1 of the queue messages.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("mp3converter.events.v1");

        /// The AMQP `content_type` of every event body.
        pub const CONTENT_TYPE: &str = "application/x-protobuf";
        /// The AMQP `type` property of every event body: the envelope's full name.
        pub const MESSAGE_TYPE: &str = "mp3converter.events.v1.Event";
    }
}

/// The encoded `FileDescriptorSet` of every contract (including the well-known types they
/// import), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mp3converter_descriptor.bin"));

/// The protobuf packages this crate defines.
pub const PACKAGES: &[&str] = &[
    "mp3converter.auth.v1",
    "mp3converter.storage.v1",
    "mp3converter.events.v1",
];
