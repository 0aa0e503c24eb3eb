//! Resumable upload sessions: bytes gathered over many appends, one at a time, kept up to a
//! break, checked against per-append checksums, invisible until complete, and removed when
//! abandoned.

use super::{ALICE, BOB, Backend, GRIDFS_CHUNK, RunningStorage, sha256_hex};
use mongodb::bson::{Binary, Document, doc, oid::ObjectId, spec::BinarySubtype};
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_client::StorageServiceClient;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::time::{Duration, Instant};
use storage::config::BulkWrite;
use test_support::pseudo_random_bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

test_support::on_each!(Backend { Mongo => mongo, Local => local }: [
    a_session_becomes_a_file_only_when_every_byte_is_in_and_completes_once,
    a_broken_append_keeps_what_arrived_but_a_checksummed_append_keeps_all_or_nothing,
    an_append_must_start_at_the_offset_and_only_one_runs_at_a_time,
    an_abandoned_session_expires_and_the_sweeper_removes_its_bytes,
    terminating_a_session_removes_it_and_its_bytes_but_not_a_complete_ones_file,
    a_creation_idempotency_key_brings_back_the_same_session,
    a_session_survives_a_restart_and_completes_with_the_right_checksum,
    the_expiry_an_append_pushed_back_survives_a_restart,
    a_complete_session_becomes_one_job_which_takes_the_session_with_it,
    the_next_append_through_a_replica_starts_on_the_lease_it_kept_which_holds_up_nobody_there,
]);

/// How many appends started on a lease their replica kept (the test's replicas share its
/// metrics).
const ON_KEPT_LEASE: &str = "storage_upload_appends_on_kept_lease_total";

#[tokio::test]
async fn replicas_taking_turns_on_one_session_never_trust_what_another_may_have_changed() {
    let mut first = RunningStorage::start(Backend::Mongo).await;
    let mut second = first.replica().await;
    let data = pseudo_random_bytes((8 * GRIDFS_CHUNK + 100) as usize, 14);
    let session = first.create_session(ALICE, data.len() as u64).await;
    let id = session.id.clone();
    let cut = 100_000;
    first.keep(&id, &data, 0..cut).await;

    // The second replica writes other bytes over the partly filled chunk and whole chunks
    // past it, then refuses them for their checksum: the session's offset does not move, but its
    // chunks past it are not what the first replica left.
    let mut refused = append_header(&id, ALICE, cut as u64);
    refused.checksum_algorithm = pb::ChecksumAlgorithm::Sha1.into();
    refused.checksum = Sha1::digest(b"something else").to_vec().into();
    // More than storage gathers before it writes (about a MiB), so some do get written.
    let other_bytes = pseudo_random_bytes(5 * GRIDFS_CHUNK as usize, 15);
    let mismatch = second.append(refused, &other_bytes, true).await;
    assert_eq!(mismatch.unwrap_err().code(), Code::DataLoss);
    // The first goes on at the same offset: it must read the chunks again.
    let second_cut = cut + 300_000;
    first.keep(&id, &data, cut..second_cut).await;
    // Then the second keeps the next bytes, so the session moves on past what the first
    // last stored of it, and the first goes on from there.
    let third_cut = second_cut + 300_000;
    second.keep(&id, &data, second_cut..third_cut).await;
    first.keep(&id, &data, third_cut..data.len()).await;

    let (_, file) = first.complete(&id, ALICE, "").await.unwrap();
    assert!(
        first.alices_video(&file.id).await == data,
        "the file holds exactly the kept bytes, none of the refused ones"
    );
    assert_eq!(file.sha256, sha256_hex(&data));
    // Both replicas run in this test's process and share its metrics.
    assert_eq!(
        first.counted("storage_upload_tail_reads_total").await,
        4.0,
        "the chunks were read back by every append after the other replica's (the second kept \
         nothing of its refused one), and only then"
    );
}

#[tokio::test]
async fn another_replica_waits_once_for_a_lease_kept_between_appends_and_then_nobody_keeps_it() {
    let mut first = RunningStorage::start(Backend::Mongo).await;
    let mut second = first.replica().await;
    let data = pseudo_random_bytes((6 * GRIDFS_CHUNK + 100) as usize, 17);
    let id = first.create_session(ALICE, data.len() as u64).await.id;
    let cuts = [0, 200_000, 400_000, 600_000, 800_000, 1_000_000, data.len()];
    first.keep(&id, &data, cuts[0]..cuts[1]).await;
    first.keep(&id, &data, cuts[1]..cuts[2]).await;
    assert_eq!(first.counted(ON_KEPT_LEASE).await, 1.0, "the second append");

    // The first replica may be appending on the lease it keeps without the record saying
    // so: the second takes the session only once that lease ran out.
    let started = Instant::now();
    second.keep(&id, &data, cuts[2]..cuts[3]).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the kept lease: {:?}",
        started.elapsed()
    );
    // From then on neither keeps it: they would wait for each other at every append.
    first.keep(&id, &data, cuts[3]..cuts[4]).await;
    first.keep(&id, &data, cuts[4]..cuts[5]).await;
    second.keep(&id, &data, cuts[5]..cuts[6]).await;
    assert_eq!(first.counted(ON_KEPT_LEASE).await, 1.0);

    second.completes_holding(&id, &data).await;
}

#[tokio::test]
async fn a_partly_filled_chunk_is_kept_in_the_sessions_record_until_it_is_the_files_last() {
    let mut storage = RunningStorage::start(Backend::Mongo).await;
    let database = storage.mongo.as_ref().unwrap().database();
    let data = pseudo_random_bytes((2 * GRIDFS_CHUNK + 1000) as usize, 18);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    let cuts = [
        0,
        100_000,
        GRIDFS_CHUNK as usize + 5000,
        2 * GRIDFS_CHUNK as usize,
        data.len(),
    ];
    storage.keep(&id, &data, cuts[0]..cuts[1]).await;
    assert_eq!(
        stored_layout(&database, &id).await,
        (vec![], Some(data[..cuts[1]].to_vec())),
        "no chunk is stored twice: the record keeps what is in the first"
    );
    storage.keep(&id, &data, cuts[1]..cuts[2]).await;
    let second_chunk = GRIDFS_CHUNK as usize..cuts[2];
    assert_eq!(
        stored_layout(&database, &id).await,
        (vec![0], Some(data[second_chunk].to_vec()))
    );
    storage.keep(&id, &data, cuts[2]..cuts[3]).await;
    assert_eq!(
        stored_layout(&database, &id).await,
        (vec![0, 1], None),
        "an append that ends where a chunk does leaves the record nothing to keep"
    );
    storage.keep(&id, &data, cuts[3]..cuts[4]).await;
    assert_eq!(
        stored_layout(&database, &id).await,
        (vec![0, 1, 2], None),
        "the file's last chunk is stored as a chunk"
    );
    storage.completes_holding(&id, &data).await;
}

#[tokio::test]
async fn a_session_whose_partly_filled_chunk_an_earlier_version_stored_goes_on_from_it() {
    let mut storage = RunningStorage::start(Backend::Mongo).await;
    let database = storage.mongo.as_ref().unwrap().database();
    let data = pseudo_random_bytes((3 * GRIDFS_CHUNK + 1000) as usize, 19);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    let cuts = [
        0,
        100_000,
        200_000,
        2 * GRIDFS_CHUNK as usize + 500,
        data.len(),
    ];
    storage.keep(&id, &data, cuts[0]..cuts[1]).await;
    // As a version before the record kept them left it: the bytes in a chunk of their own.
    let files_id = ObjectId::parse_str(&id).unwrap();
    database
        .collection::<Document>("videos.chunks")
        .insert_one(doc! { "files_id": files_id, "n": 0_i64, "data": generic(&data[..cuts[1]]) })
        .await
        .unwrap();
    drop_the_records_tail(&database, files_id).await;
    // Restarted, it knows nothing of the chunk but what is stored.
    let mut storage = storage.restart().await;
    storage.keep(&id, &data, cuts[1]..cuts[2]).await;
    assert_eq!(
        stored_layout(&database, &id).await,
        (vec![0], None),
        "the chunk stored partly filled is stored again, in place"
    );
    storage.keep(&id, &data, cuts[2]..cuts[3]).await;
    assert_eq!(
        stored_layout(&database, &id).await,
        (
            vec![0, 1],
            Some(data[2 * GRIDFS_CHUNK as usize..cuts[3]].to_vec())
        ),
        "once it fills, the record keeps the next one's"
    );
    storage.keep(&id, &data, cuts[3]..cuts[4]).await;
    storage.completes_holding(&id, &data).await;
}

#[tokio::test]
async fn bytes_a_replica_of_an_earlier_version_dropped_are_asked_for_again() {
    let mut storage = RunningStorage::start(Backend::Mongo).await;
    let database = storage.mongo.as_ref().unwrap().database();
    let data = pseudo_random_bytes((2 * GRIDFS_CHUNK + 1000) as usize, 20);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    let cut = GRIDFS_CHUNK as usize + 100_000;
    storage.keep(&id, &data, 0..cut).await;
    // An earlier version's replica stores the record as it knows it: without the tail.
    let files_id = ObjectId::parse_str(&id).unwrap();
    drop_the_records_tail(&database, files_id).await;
    // Restarted, this one knows nothing of those bytes either.
    let mut storage = storage.restart().await;
    let refused = storage
        .append(append_header(&id, ALICE, cut as u64), &data[cut..], true)
        .await;
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("at offset {GRIDFS_CHUNK}")),
        "{refused:?}"
    );
    assert_eq!(
        storage.session(&id, ALICE).await.unwrap().offset,
        GRIDFS_CHUNK,
        "the session went back to where its bytes are whole"
    );
    storage
        .keep(&id, &data, GRIDFS_CHUNK as usize..data.len())
        .await;
    storage.completes_holding(&id, &data).await;
}

/// Stores session `files_id`'s record as a version before it kept a tail would: without one.
async fn drop_the_records_tail(database: &mongodb::Database, files_id: ObjectId) {
    database
        .collection::<Document>("upload_sessions")
        .update_one(doc! { "_id": files_id }, doc! { "$unset": { "tail": "" } })
        .await
        .unwrap();
}

/// The chunks stored of session `id`, and the bytes its record keeps of the last one.
async fn stored_layout(database: &mongodb::Database, id: &str) -> (Vec<i64>, Option<Vec<u8>>) {
    let files_id = ObjectId::parse_str(id).unwrap();
    let mut chunks: Vec<i64> = database
        .collection::<Document>("videos.chunks")
        .distinct("n", doc! { "files_id": files_id })
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    let record = database
        .collection::<Document>("upload_sessions")
        .find_one(doc! { "_id": files_id })
        .await
        .unwrap()
        .unwrap();
    let tail = record.get_binary_generic("tail").ok().cloned();
    chunks.sort_unstable();
    (chunks, tail)
}

fn generic(bytes: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

#[tokio::test]
async fn a_chunk_the_server_refuses_fails_the_append_and_nothing_of_it_is_kept() {
    let mut storage = RunningStorage::start(Backend::Mongo).await;
    let database = storage.mongo.as_ref().unwrap().database();
    let data = pseudo_random_bytes((6 * GRIDFS_CHUNK) as usize, 16);
    let session = storage.create_session(ALICE, data.len() as u64).await;
    let id = session.id.clone();
    // The first append leaves chunk 0 partly filled, its bytes in the session's record: the
    // next one stores it with the chunks after it.
    let cut = 100_000;
    storage.keep(&id, &data, 0..cut).await;
    // The server refuses chunk 1 alone (as a schema validator may), answering `ok` with the
    // refusal listed: unless that list is read, the append goes on past it and is kept with
    // the chunk missing.
    refuse_chunk(&database, 1).await;
    let other_bytes = pseudo_random_bytes(4 * GRIDFS_CHUNK as usize, 17);
    let refused = storage
        .append(append_header(&id, ALICE, cut as u64), &other_bytes, true)
        .await;
    assert_eq!(
        refused.map(|session| session.offset).unwrap_err().code(),
        Code::Internal,
        "an append with a chunk missing is not kept"
    );
    assert_eq!(
        storage.settled_session(&id, cut as u64).await.offset,
        cut as u64
    );

    accept_every_chunk(&database).await;
    storage.keep(&id, &data, cut..data.len()).await;
    let (_, file) = storage.complete(&id, ALICE, "").await.unwrap();
    assert!(
        storage.alices_video(&file.id).await == data,
        "the file holds the kept bytes, none of the failed append's"
    );
}

#[tokio::test]
async fn with_bulk_write_a_durable_point_records_with_its_bytes_and_a_refused_chunk_stops_it() {
    a_chunk_refused_at_a_durable_point_leaves_the_record_as_it_was(BulkWrite::Auto, "with_bytes")
        .await;
}

#[tokio::test]
async fn without_bulk_write_a_durable_point_records_after_its_bytes_and_a_refused_chunk_stops_it() {
    a_chunk_refused_at_a_durable_point_leaves_the_record_as_it_was(BulkWrite::Off, "after_bytes")
        .await;
}

#[tokio::test]
async fn a_server_found_to_lack_bulk_write_at_a_durable_point_gets_two_commands_from_then_on() {
    // A server of its own: the failure below is set server-wide.
    let server = test_support::MongoServer::start().await.unwrap();
    let mongo = test_support::TestMongo::on(server.uri()).await.unwrap();
    let admin = mongo.database().client().database("admin");
    let mut storage = RunningStorage::start_on(Some(mongo), |_| {}).await;
    let data = pseudo_random_bytes((3 * GRIDFS_CHUNK) as usize, 19);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    let (cut, second_cut) = (100_000, 300_000);
    storage.keep(&id, &data, 0..cut).await;
    assert_eq!(
        storage.durable_points().await,
        [("with_bytes".to_owned(), 1.0)],
        "the server said it has bulkWrite when storage connected"
    );

    // Now it answers bulkWrite as a server without the command does (one downgraded under
    // storage, or one that says it is 8.0 but is not). The append that finds out is refused as
    // storage being unavailable, with nothing of it kept; sent again, it is kept.
    let lacking = doc! {
        "configureFailPoint": "failCommand",
        "mode": "alwaysOn",
        "data": { "failCommands": ["bulkWrite"], "errorCode": 59 },
    };
    admin.run_command(lacking).await.unwrap();
    let header = append_header(&id, ALICE, cut as u64);
    let refused = storage.append(header, &data[cut..second_cut], true).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    assert_eq!(
        storage.settled_session(&id, cut as u64).await.offset,
        cut as u64
    );
    let kept = storage.keep(&id, &data, cut..second_cut).await;
    assert_eq!(kept.offset, second_cut as u64);

    // The command is back, but storage does not try it again until it restarts: the next
    // durable point is two commands too.
    let back = doc! { "configureFailPoint": "failCommand", "mode": "off" };
    admin.run_command(back).await.unwrap();
    storage.keep(&id, &data, second_cut..data.len()).await;
    storage.completes_holding(&id, &data).await;
    assert_eq!(
        storage.durable_points().await,
        [
            ("after_bytes".to_owned(), 2.0),
            ("with_bytes".to_owned(), 1.0)
        ],
        "the first append's durable point in one command, the two kept after the refusal in two"
    );
}

/// On GridFS with `bulk_write`: the durable points are counted as written `recorded`, and one
/// whose chunk the server refuses leaves the session's record as it was, though the record's
/// change may go in the same command as that chunk.
async fn a_chunk_refused_at_a_durable_point_leaves_the_record_as_it_was(
    bulk_write: BulkWrite,
    recorded: &str,
) {
    let mut storage = RunningStorage::start_with(Backend::Mongo, |config| {
        config.mongodb_bulk_write = bulk_write;
    })
    .await;
    let database = storage.mongo.as_ref().unwrap().database();
    let data = pseudo_random_bytes((3 * GRIDFS_CHUNK) as usize, 18);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    // Less than a chunk: its bytes wait in the session's record.
    let cut = 100_000;
    storage.keep(&id, &data, 0..cut).await;
    assert_eq!(
        storage.durable_points().await,
        [(recorded.to_owned(), 1.0)],
        "the append's one durable point"
    );

    // The next append fills chunk 0, which the server refuses. It brings less than storage
    // gathers before a write, so its durable point's command is its only one.
    refuse_chunk(&database, 0).await;
    let second_cut = cut + 200_000;
    let refused = storage
        .append(
            append_header(&id, ALICE, cut as u64),
            &data[cut..second_cut],
            true,
        )
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Internal);
    assert_eq!(
        storage.settled_session(&id, cut as u64).await.offset,
        cut as u64,
        "the record counts no byte of a chunk that was not stored"
    );

    accept_every_chunk(&database).await;
    storage.keep(&id, &data, cut..data.len()).await;
    storage.completes_holding(&id, &data).await;
    assert_eq!(
        storage.durable_points().await,
        [(recorded.to_owned(), 2.0)],
        "the durable points of the two appends kept (the refused one reached none)"
    );
}

/// Has the server refuse to store chunk `n` of any file in the videos bucket (as a schema
/// validator may).
async fn refuse_chunk(database: &mongodb::Database, n: i64) {
    let refuse = doc! {
        "collMod": "videos.chunks",
        "validator": { "n": { "$ne": n } },
        "validationLevel": "strict",
        "validationAction": "error",
    };
    database.run_command(refuse).await.unwrap();
}

/// Takes back [`refuse_chunk`].
async fn accept_every_chunk(database: &mongodb::Database) {
    let accept_all = doc! { "collMod": "videos.chunks", "validator": {} };
    database.run_command(accept_all).await.unwrap();
}

fn create_request(owner: &str, length: u64) -> pb::CreateUploadSessionRequest {
    pb::CreateUploadSessionRequest {
        owner_id: owner.into(),
        length,
        filename: "long walk.mp4".into(),
        content_type: "video/mp4".into(),
        metadata: "filename bG9uZyB3YWxrLm1wNA==".into(),
        ..Default::default()
    }
}

fn append_header(id: &str, owner: &str, offset: u64) -> pb::AppendHeader {
    pb::AppendHeader {
        id: id.into(),
        owner_id: owner.into(),
        offset,
        ..Default::default()
    }
}

fn message(content: pb::append_upload_request::Content) -> pb::AppendUploadRequest {
    pb::AppendUploadRequest {
        content: Some(content),
    }
}

/// An append's messages: the header, `data` in 64 KiB chunks, and `finish` when `finished`.
fn append_messages(
    header: pb::AppendHeader,
    data: &[u8],
    finished: bool,
) -> Vec<pb::AppendUploadRequest> {
    use pb::append_upload_request::Content;
    let mut messages = vec![message(Content::Header(header))];
    messages.extend(
        data.chunks(64 * 1024)
            .map(|chunk| message(Content::Chunk(chunk.to_vec().into()))),
    );
    if finished {
        messages.push(message(Content::Finish(pb::UploadFinish {})));
    }
    messages
}

impl RunningStorage {
    /// This process's durable points of appends, by how the record was written (the
    /// `record` label of `storage_upload_durable_points_total`), in the label's order.
    async fn durable_points(&self) -> Vec<(String, f64)> {
        let metrics = test_support::scrape(&format!("{}/metrics", self.service.ops_url())).await;
        let mut points =
            test_support::series_by_label(&metrics, "storage_upload_durable_points_total");
        // The exposition's order of a metric's series is not stable between runs.
        points.sort_by(|a, b| a.0.cmp(&b.0));
        points
    }

    /// Appends `data[range]` to Alice's session `id` at `range.start`; it must be kept.
    async fn keep(&mut self, id: &str, data: &[u8], range: Range<usize>) -> pb::UploadSession {
        let header = append_header(id, ALICE, range.start as u64);
        self.append(header, &data[range], true).await.unwrap()
    }

    async fn create_session(&mut self, owner: &str, length: u64) -> pb::UploadSession {
        let created = self
            .client
            .create_upload_session(create_request(owner, length))
            .await
            .unwrap()
            .into_inner();
        assert!(!created.replayed);
        created.session.unwrap()
    }

    async fn append(
        &mut self,
        header: pb::AppendHeader,
        data: &[u8],
        finished: bool,
    ) -> Result<pb::UploadSession, tonic::Status> {
        let messages = append_messages(header, data, finished);
        let response = self
            .client
            .append_upload(tokio_stream::iter(messages))
            .await?;
        Ok(response.into_inner().session.unwrap())
    }

    async fn session(&mut self, id: &str, owner: &str) -> Result<pb::UploadSession, tonic::Status> {
        session_through(self.client.clone(), id, owner).await
    }

    async fn complete(
        &mut self,
        id: &str,
        owner: &str,
        job_id: &str,
    ) -> Result<(pb::UploadSession, pb::FileInfo), tonic::Status> {
        let request = pb::CompleteUploadSessionRequest {
            id: id.into(),
            owner_id: owner.into(),
            job_id: job_id.into(),
        };
        let completed = self
            .client
            .complete_upload_session(request)
            .await?
            .into_inner();
        Ok((completed.session.unwrap(), completed.file.unwrap()))
    }

    async fn abort(&mut self, id: &str, owner: &str) -> Result<(), tonic::Status> {
        let request = pb::AbortUploadSessionRequest {
            id: id.into(),
            owner_id: owner.into(),
        };
        self.client.abort_upload_session(request).await?;
        Ok(())
    }

    /// Completes Alice's session `id`, whose file must hold exactly `data`.
    async fn completes_holding(&mut self, id: &str, data: &[u8]) -> pb::FileInfo {
        let (_, file) = self.complete(id, ALICE, "").await.unwrap();
        assert!(
            self.alices_video(&file.id).await == data,
            "the file holds exactly the kept bytes"
        );
        assert_eq!(file.sha256, sha256_hex(data));
        file
    }

    /// Waits until session `id` is at `offset` (a broken append lets go just after its caller
    /// sees the break), for a while, and returns it.
    async fn settled_session(&mut self, id: &str, offset: u64) -> pb::UploadSession {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let session = self.session(id, ALICE).await.unwrap();
            if session.offset == offset || Instant::now() > deadline {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn a_session_becomes_a_file_only_when_every_byte_is_in_and_completes_once(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    // Three appends of uneven sizes: the second starts inside a GridFS chunk and ends in
    // another, so partly filled chunks are carried over between appends.
    let data = pseudo_random_bytes((3 * GRIDFS_CHUNK + 17) as usize, 7);
    let cuts = [
        0,
        100_000,
        100_000 + 2 * GRIDFS_CHUNK as usize + 5,
        data.len(),
    ];
    let session = storage.create_session(ALICE, data.len() as u64).await;
    assert_eq!(
        (session.offset, session.length, session.complete),
        (0, data.len() as u64, false)
    );
    assert_eq!(session.metadata, "filename bG9uZyB3YWxrLm1wNA==");
    assert!(session.expires_at.is_some());
    for window in cuts.windows(2) {
        assert_eq!(
            storage.stat(&session.id, ALICE).await.unwrap_err().code(),
            Code::NotFound,
            "nothing is a file before the last byte"
        );
        let appended = storage.keep(&session.id, &data, window[0]..window[1]).await;
        assert_eq!(appended.offset, window[1] as u64);
        assert_eq!(storage.session(&session.id, ALICE).await.unwrap(), appended);
    }
    assert_eq!(
        storage.stat(&session.id, ALICE).await.unwrap_err().code(),
        Code::NotFound,
        "the file appears on completion, not on the last append"
    );

    let (completed, file) = storage.complete(&session.id, ALICE, "").await.unwrap();
    assert!(completed.complete);
    assert_eq!(file.id, session.id, "the file takes the session's id");
    assert_eq!(file.size, data.len() as u64);
    assert_eq!(file.sha256, sha256_hex(&data));
    assert_eq!(
        storage.counted("storage_upload_rehashes_total").await,
        0.0,
        "the digest is carried along the appends, not read back from the stored bytes"
    );
    assert_eq!(
        storage.counted("storage_upload_tail_reads_total").await,
        0.0,
        "each append starts where the one before it left the chunks, without reading them back"
    );
    assert_eq!(file.filename, "long walk.mp4");
    assert!(
        storage.alices_video(&file.id).await == data,
        "the file holds exactly the appended bytes"
    );

    let job_id = "65f000000000000000000001";
    let (named, again) = storage.complete(&session.id, ALICE, job_id).await.unwrap();
    assert_eq!(again, file, "completing again returns the same file");
    assert_eq!(named.job_id, job_id);
    let other_job = "65f000000000000000000002";
    let refused = storage.complete(&session.id, ALICE, other_job).await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    let refused = storage
        .append(
            append_header(&session.id, ALICE, data.len() as u64),
            b"x",
            true,
        )
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
}

async fn a_broken_append_keeps_what_arrived_but_a_checksummed_append_keeps_all_or_nothing(
    backend: Backend,
) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(2 * 1024 * 1024, 8);
    let session = storage.create_session(ALICE, data.len() as u64).await;
    let id = session.id.clone();

    // Without a checksum, a stream that ends without `finish` keeps what it carried.
    let broken = storage
        .append(append_header(&id, ALICE, 0), &data[..700_000], false)
        .await;
    assert_eq!(broken.unwrap_err().code(), Code::Cancelled);
    assert_eq!(storage.settled_session(&id, 700_000).await.offset, 700_000);

    // With one, a wrong digest keeps nothing, and so does a break.
    let mut header = append_header(&id, ALICE, 700_000);
    header.checksum_algorithm = pb::ChecksumAlgorithm::Sha1.into();
    header.checksum = Sha1::digest(b"something else").to_vec().into();
    let mismatch = storage
        .append(header.clone(), &data[700_000..900_000], true)
        .await;
    assert_eq!(mismatch.unwrap_err().code(), Code::DataLoss);
    header.checksum = Sha1::digest(&data[700_000..900_000]).to_vec().into();
    let broken = storage
        .append(header.clone(), &data[700_000..800_000], false)
        .await;
    assert_eq!(broken.unwrap_err().code(), Code::Cancelled);
    assert_eq!(storage.settled_session(&id, 700_000).await.offset, 700_000);

    let kept = storage
        .append(header, &data[700_000..900_000], true)
        .await
        .unwrap();
    assert_eq!(kept.offset, 900_000, "a matching SHA-1 keeps the append");
    let mut header = append_header(&id, ALICE, 900_000);
    header.checksum_algorithm = pb::ChecksumAlgorithm::Sha256.into();
    header.checksum = Sha256::digest(&data[900_000..]).to_vec().into();
    let kept = storage
        .append(header, &data[900_000..], true)
        .await
        .unwrap();
    assert_eq!(
        kept.offset,
        data.len() as u64,
        "and so does a matching SHA-256"
    );

    // Bytes past the declared length are refused: those before them are kept (no checksum)...
    let session = storage.create_session(ALICE, 10).await;
    let past = storage
        .append(append_header(&session.id, ALICE, 0), &[1; 11], true)
        .await;
    assert_eq!(past.unwrap_err().code(), Code::OutOfRange);
    // ...unless the header said how many were coming: then none is (not even the first
    // 64 KiB chunk, which would fit).
    let session = storage.create_session(ALICE, 100_000).await;
    let mut header = append_header(&session.id, ALICE, 0);
    header.length = Some(100_001);
    let past = storage.append(header, &[1; 100_001], true).await;
    assert_eq!(past.unwrap_err().code(), Code::OutOfRange);
    let after = storage.session(&session.id, ALICE).await.unwrap();
    assert_eq!(after.offset, 0, "nothing of a refused append is kept");

    let (_, file) = storage.complete(&id, ALICE, "").await.unwrap();
    assert_eq!(
        file.sha256,
        sha256_hex(&data),
        "only the kept bytes, in order"
    );
}

/// GetUploadSession through a client of its own, so that it can run beside other calls.
async fn session_through(
    mut client: StorageServiceClient<Channel>,
    id: &str,
    owner: &str,
) -> Result<pb::UploadSession, tonic::Status> {
    let request = pb::GetUploadSessionRequest {
        id: id.into(),
        owner_id: owner.into(),
        any_owner: false,
    };
    Ok(client
        .get_upload_session(request)
        .await?
        .into_inner()
        .session
        .unwrap())
}

async fn an_append_must_start_at_the_offset_and_only_one_runs_at_a_time(backend: Backend) {
    use pb::append_upload_request::Content;
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(600_000, 9);
    let session = storage.create_session(ALICE, data.len() as u64).await;
    let id = session.id.clone();

    let wrong = storage
        .append(append_header(&id, ALICE, 5), &data[5..10], true)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    assert!(wrong.message().contains("at offset 0, not 5"), "{wrong:?}");
    let stranger = storage
        .append(append_header(&id, BOB, 0), &data[..10], true)
        .await;
    assert_eq!(stranger.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        storage.session(&id, BOB).await.unwrap_err().code(),
        Code::NotFound
    );

    // An append that is still running holds the session: a second one waits, then is refused.
    let (first, outgoing) = mpsc::channel(8);
    let mut client = storage.client.clone();
    let running = tokio::spawn(async move {
        client
            .append_upload(ReceiverStream::new(outgoing))
            .await
            .map(|response| response.into_inner().session.unwrap())
    });
    first
        .send(message(Content::Header(append_header(&id, ALICE, 0))))
        .await
        .unwrap();
    first
        .send(message(Content::Chunk(data[..300_000].to_vec().into())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reader = storage.client.clone();
    let (second, read_meanwhile) = tokio::join!(
        storage.append(append_header(&id, ALICE, 0), &data[..300_000], true),
        session_through(reader, &id, ALICE)
    );
    let second = second.unwrap_err();
    assert_eq!(second.code(), Code::Aborted, "{second:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited first"
    );
    // So does reading the session, which then says the append still runs.
    let read_meanwhile = read_meanwhile.unwrap();
    assert!(read_meanwhile.appending, "{read_meanwhile:?}");
    assert_eq!(read_meanwhile.offset, 0);

    // A read while it runs answers once it ended, with what it kept.
    let (client, read_id) = (storage.client.clone(), id.clone());
    let read_as_it_ends =
        tokio::spawn(async move { session_through(client, &read_id, ALICE).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first
        .send(message(Content::Finish(pb::UploadFinish {})))
        .await
        .unwrap();
    drop(first);
    assert_eq!(running.await.unwrap().unwrap().offset, 300_000);
    let read_as_it_ends = read_as_it_ends.await.unwrap().unwrap();
    assert_eq!(
        (read_as_it_ends.offset, read_as_it_ends.appending),
        (300_000, false)
    );
    let rest = storage
        .append(append_header(&id, ALICE, 300_000), &data[300_000..], true)
        .await
        .unwrap();
    assert_eq!(rest.offset, data.len() as u64);
    let (_, file) = storage.complete(&id, ALICE, "").await.unwrap();
    assert_eq!(file.sha256, sha256_hex(&data));
}

async fn the_next_append_through_a_replica_starts_on_the_lease_it_kept_which_holds_up_nobody_there(
    backend: Backend,
) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes((3 * GRIDFS_CHUNK + 10) as usize, 18);
    let id = storage.create_session(ALICE, data.len() as u64).await.id;
    let cuts = [0, 300_000, 500_000, 700_000, data.len()];
    storage.keep(&id, &data, cuts[0]..cuts[1]).await;
    assert_eq!(
        storage.counted(ON_KEPT_LEASE).await,
        0.0,
        "a new session's lease is taken"
    );
    storage.keep(&id, &data, cuts[1]..cuts[2]).await;
    storage.keep(&id, &data, cuts[2]..cuts[3]).await;
    assert_eq!(storage.counted(ON_KEPT_LEASE).await, 2.0);

    // Reading the session (a client's HEAD) does not wait for the lease this replica keeps,
    // which would take its whole time to run out: no append runs.
    let started = Instant::now();
    let read = storage.session(&id, ALICE).await.unwrap();
    assert_eq!((read.offset, read.appending), (cuts[3] as u64, false));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered without waiting: {:?}",
        started.elapsed()
    );
    // A refused append changes nothing: the next one still starts on the kept lease.
    let wrong = storage
        .append(append_header(&id, ALICE, 5), &data[5..10], true)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    storage.keep(&id, &data, cuts[3]..cuts[4]).await;
    assert_eq!(storage.counted(ON_KEPT_LEASE).await, 3.0);
    let (_, file) = storage.complete(&id, ALICE, "").await.unwrap();
    assert_eq!(file.sha256, sha256_hex(&data));

    // Nor does terminating another upload straight after its append.
    let other = storage.create_session(ALICE, 1000).await.id;
    storage.keep(&other, &data, 0..500).await;
    let started = Instant::now();
    storage.abort(&other, ALICE).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "terminated without waiting: {:?}",
        started.elapsed()
    );
    assert_eq!(
        storage.session(&other, ALICE).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn an_abandoned_session_expires_and_the_sweeper_removes_its_bytes(backend: Backend) {
    let mut storage = RunningStorage::start_with(backend, |config| {
        config.upload_expiry = Duration::from_secs(2);
    })
    .await;
    let data = pseudo_random_bytes(400_000, 10);
    let kept = storage.create_session(ALICE, 1_000_000).await;
    let abandoned = storage.create_session(ALICE, 1_000_000).await;
    storage
        .append(append_header(&abandoned.id, ALICE, 0), &data, true)
        .await
        .unwrap();
    assert!(storage.stored_objects().await > 0);

    // Appending keeps a session alive; the abandoned one runs out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut offset = 0;
    loop {
        storage
            .append(append_header(&kept.id, ALICE, offset), &data[..1000], true)
            .await
            .unwrap();
        offset += 1000;
        match storage.session(&abandoned.id, ALICE).await {
            Err(status) if status.code() == Code::NotFound => break,
            Ok(session) => {
                if session.expired {
                    let refused = storage
                        .append(append_header(&abandoned.id, ALICE, 400_000), b"x", true)
                        .await;
                    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
                }
            }
            Err(status) => panic!("{status:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned session was never removed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let kept = storage.session(&kept.id, ALICE).await.unwrap();
    assert!(
        !kept.expired,
        "a session that takes appends does not expire"
    );
    // Only the live session's bytes are left.
    storage.abort(&kept.id, ALICE).await.unwrap();
    storage.wait_for_stored_objects(0).await;
}

async fn terminating_a_session_removes_it_and_its_bytes_but_not_a_complete_ones_file(
    backend: Backend,
) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(300_000, 11);
    let session = storage.create_session(ALICE, 1_000_000).await;
    storage
        .append(append_header(&session.id, ALICE, 0), &data, true)
        .await
        .unwrap();
    assert_eq!(
        storage.abort(&session.id, BOB).await.unwrap_err().code(),
        Code::NotFound,
        "only the owner may terminate"
    );
    storage.abort(&session.id, ALICE).await.unwrap();
    assert_eq!(
        storage
            .session(&session.id, ALICE)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    storage.wait_for_stored_objects(0).await;

    let session = storage.create_session(ALICE, data.len() as u64).await;
    storage
        .append(append_header(&session.id, ALICE, 0), &data, true)
        .await
        .unwrap();
    let (_, file) = storage.complete(&session.id, ALICE, "").await.unwrap();
    storage.abort(&session.id, ALICE).await.unwrap();
    assert_eq!(
        storage.stat(&file.id, ALICE).await.unwrap(),
        file,
        "the file belongs to its job now"
    );
}

async fn a_creation_idempotency_key_brings_back_the_same_session(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let keyed = |fingerprint: &str| pb::CreateUploadSessionRequest {
        idempotency_key: "create-1".into(),
        request_fingerprint: fingerprint.into(),
        ..create_request(ALICE, 1000)
    };
    let first = storage
        .client
        .create_upload_session(keyed("a"))
        .await
        .unwrap()
        .into_inner();
    let again = storage
        .client
        .create_upload_session(keyed("a"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.session.unwrap().id, first.session.unwrap().id);
    let other = storage.client.create_upload_session(keyed("b")).await;
    assert_eq!(other.unwrap_err().code(), Code::AlreadyExists);
    // The same key on a multipart upload's job is another key.
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"video").await;
    let job = storage
        .client
        .create_job(pb::CreateJobRequest {
            owner_id: ALICE.into(),
            owner_email: "alice@example.com".into(),
            video_id: video.id,
            idempotency_key: "create-1".into(),
            request_fingerprint: "job".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!job.replayed);
}

async fn a_session_survives_a_restart_and_completes_with_the_right_checksum(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes((GRIDFS_CHUNK * 2 + 1000) as usize, 12);
    let session = storage.create_session(ALICE, data.len() as u64).await;
    let half = GRIDFS_CHUNK as usize + 10;
    storage
        .append(append_header(&session.id, ALICE, 0), &data[..half], true)
        .await
        .unwrap();
    let mut storage = storage.restart().await;
    let resumed = storage.session(&session.id, ALICE).await.unwrap();
    assert_eq!(resumed.offset, half as u64);
    storage
        .append(
            append_header(&session.id, ALICE, half as u64),
            &data[half..],
            true,
        )
        .await
        .unwrap();
    // The running digest did not survive the restart: the file is hashed from its bytes.
    let (_, file) = storage.complete(&session.id, ALICE, "").await.unwrap();
    assert_eq!(file.sha256, sha256_hex(&data));
    assert_eq!(storage.counted("storage_upload_rehashes_total").await, 1.0);
    // Nor did what this replica knew of the last chunk: GridFS reads it back (a local file
    // has no chunks).
    let tail_reads = match backend {
        Backend::Mongo => 1.0,
        Backend::Local => 0.0,
    };
    assert_eq!(
        storage.counted("storage_upload_tail_reads_total").await,
        tail_reads
    );
}

async fn the_expiry_an_append_pushed_back_survives_a_restart(backend: Backend) {
    let mut storage = RunningStorage::start_with(backend, |config| {
        config.upload_expiry = Duration::from_secs(4);
    })
    .await;
    let session = storage.create_session(ALICE, 1_000_000).await;
    let created = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let data = pseudo_random_bytes(1000, 15);
    storage
        .append(append_header(&session.id, ALICE, 0), &data, true)
        .await
        .unwrap();
    let mut storage = storage.restart().await;
    // Past the expiry the session was created with, well inside the one its append gave it;
    // the sweeper (every second) has looked at it since the restart.
    tokio::time::sleep_until((created + Duration::from_millis(4800)).into()).await;
    let resumed = storage.session(&session.id, ALICE).await.unwrap();
    assert!(!resumed.expired, "{resumed:?}");
    assert_eq!(resumed.offset, 1000);
    let seconds = |session: &pb::UploadSession| session.expires_at.expect("an expiry").seconds;
    assert!(seconds(&resumed) > seconds(&session), "{resumed:?}");
    storage
        .append(append_header(&session.id, ALICE, 1000), &data, true)
        .await
        .unwrap();
}

async fn a_complete_session_becomes_one_job_which_takes_the_session_with_it(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(5000, 13);
    let session = storage.create_session(ALICE, data.len() as u64).await;
    let job_request = pb::CreateJobRequest {
        owner_id: ALICE.into(),
        owner_email: "alice@example.com".into(),
        video_id: session.id.clone(),
        original_filename: "long walk.mp4".into(),
        upload_id: session.id.clone(),
        ..Default::default()
    };
    let early = storage.client.create_job(job_request.clone()).await;
    assert_eq!(
        early.unwrap_err().code(),
        Code::NotFound,
        "no video before the session completes"
    );
    storage
        .append(append_header(&session.id, ALICE, 0), &data, true)
        .await
        .unwrap();
    storage.complete(&session.id, ALICE, "").await.unwrap();

    let first = storage
        .client
        .create_job(job_request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = storage
        .client
        .create_job(job_request.clone())
        .await
        .unwrap()
        .into_inner();
    let job = first.job.unwrap();
    assert!(!first.replayed && second.replayed, "one job per session");
    assert_eq!(second.job.unwrap().id, job.id);
    assert_eq!(job.upload_id, session.id, "the job names its upload");
    let not_the_video = pb::CreateJobRequest {
        video_id: storage.stored(pb::Bucket::Videos, ALICE, b"other").await.id,
        ..job_request
    };
    let refused = storage.client.create_job(not_the_video).await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);

    storage
        .client
        .delete_job(pb::DeleteJobRequest {
            id: job.id,
            owner_id: ALICE.into(),
            any_owner: false,
        })
        .await
        .unwrap();
    assert_eq!(
        storage
            .session(&session.id, ALICE)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "the session goes with its job"
    );
}
