//! The storage contract over real gRPC on loopback: every scenario runs against both backends,
//! MongoDB GridFS (on the MongoDB-wire server) and the embedded local directory.

use futures::StreamExt;
use mongodb::bson::doc;
use proto::storage::v1 as pb;
use proto::storage::v1::storage_service_client::StorageServiceClient;
use sha2::{Digest, Sha256};
use std::time::Duration;
use test_support::{Running, TempDir, TestMongo, configs, pseudo_random_bytes, temp_dir};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

#[path = "storage_contract/upload_sessions.rs"]
mod upload_sessions;

const ALICE: &str = "user-alice";
const BOB: &str = "user-bob";
/// GridFS's chunk size: ranges that cross it exercise the chunk arithmetic.
const GRIDFS_CHUNK: u64 = 255 * 1024;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Mongo,
    Local,
}

/// One storage service on port 0 with its own database or directory, and a raw gRPC client of
/// it (these tests are of the contract itself, so they speak it directly).
struct RunningStorage {
    service: Running<storage::App>,
    client: StorageServiceClient<Channel>,
    mongo: Option<TestMongo>,
    dir: TempDir,
}

impl RunningStorage {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    async fn start_with(backend: Backend, change: impl FnOnce(&mut storage::Config)) -> Self {
        let mongo = match backend {
            Backend::Mongo => Some(TestMongo::create().await.unwrap()),
            Backend::Local => None,
        };
        Self::start_on(mongo, change).await
    }

    /// On GridFS in `mongo` (a database on a server of the test's own, say), or on the local
    /// directory when there is none.
    async fn start_on(mongo: Option<TestMongo>, change: impl FnOnce(&mut storage::Config)) -> Self {
        test_support::init_tracing();
        let dir = temp_dir();
        let mut config = configs::storage(dir.path(), mongo.as_ref());
        change(&mut config);
        let service = Running::<storage::App>::start(config).await.unwrap();
        let client = StorageServiceClient::new(service.grpc_channel().await.unwrap());
        Self {
            service,
            client,
            mongo,
            dir,
        }
    }

    async fn restart(self) -> Self {
        let Self {
            service,
            mongo,
            dir,
            ..
        } = self;
        let service = service.restart().await.unwrap();
        let client = StorageServiceClient::new(service.grpc_channel().await.unwrap());
        Self {
            service,
            client,
            mongo,
            dir,
        }
    }

    /// Another storage process over the same database, as a second replica (GridFS only: a
    /// local directory has one owner).
    async fn replica(&self) -> Self {
        assert!(self.mongo.is_some(), "replicas share a MongoDB database");
        let service = Running::<storage::App>::start(self.service.config().clone())
            .await
            .unwrap();
        let client = StorageServiceClient::new(service.grpc_channel().await.unwrap());
        Self {
            service,
            client,
            mongo: None,
            dir: temp_dir(),
        }
    }

    /// This process's count of `counter` as its metrics endpoint serves it.
    async fn counted(&self, counter: &str) -> f64 {
        let metrics = test_support::scrape(&format!("{}/metrics", self.service.ops_url())).await;
        test_support::counter(&metrics, counter)
    }

    /// Stores `data`, which must succeed.
    async fn stored(&mut self, bucket: pb::Bucket, owner: &str, data: &[u8]) -> pb::FileInfo {
        self.upload(bucket, owner, data).await.unwrap()
    }

    async fn upload(
        &mut self,
        bucket: pb::Bucket,
        owner: &str,
        data: &[u8],
    ) -> Result<pb::FileInfo, tonic::Status> {
        self.upload_for_job(bucket, owner, "", data).await
    }

    /// Uploads a file made for job `job_id` (an MP3, as a converter stores it).
    async fn upload_for_job(
        &mut self,
        bucket: pb::Bucket,
        owner: &str,
        job_id: &str,
        data: &[u8],
    ) -> Result<pb::FileInfo, tonic::Status> {
        let mut first = header(bucket, owner);
        if let Some(pb::upload_request::Content::Header(header)) = first.content.as_mut() {
            header.job_id = job_id.into();
        }
        let mut messages = vec![first];
        messages.extend(data.chunks(64 * 1024).map(chunk));
        messages.push(finish());
        let response = self.client.upload(tokio_stream::iter(messages)).await?;
        Ok(response.into_inner().file.unwrap())
    }

    async fn download(
        &mut self,
        bucket: pb::Bucket,
        id: &str,
        owner: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(pb::FileInfo, Vec<u8>), tonic::Status> {
        use pb::download_response::Content;
        let request = pb::DownloadRequest {
            bucket: bucket.into(),
            id: id.into(),
            owner_id: owner.into(),
            any_owner: owner.is_empty(),
            offset,
            length,
        };
        let mut stream = self.client.download(request).await?.into_inner();
        let info = match stream.next().await.unwrap()?.content {
            Some(Content::Info(info)) => info,
            other => panic!("the first message must be the info, got {other:?}"),
        };
        let mut bytes = Vec::new();
        while let Some(message) = stream.next().await {
            match message?.content {
                Some(Content::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
                other => panic!("only chunks may follow the info, got {other:?}"),
            }
        }
        Ok((info, bytes))
    }

    /// Every byte of Alice's video `id`.
    async fn alices_video(&mut self, id: &str) -> Vec<u8> {
        let (_, bytes) = self
            .download(pb::Bucket::Videos, id, ALICE, 0, None)
            .await
            .unwrap();
        bytes
    }

    async fn stat(&mut self, id: &str, owner: &str) -> Result<pb::FileInfo, tonic::Status> {
        Ok(self.stat_asking(id, owner, false).await?.file.unwrap())
    }

    /// Stat of video `id` as `owner`, asking where its bytes lie or not.
    async fn stat_asking(
        &mut self,
        id: &str,
        owner: &str,
        local_path_wanted: bool,
    ) -> Result<pb::StatResponse, tonic::Status> {
        let request = pb::StatRequest {
            bucket: pb::Bucket::Videos.into(),
            id: id.into(),
            owner_id: owner.into(),
            any_owner: owner.is_empty(),
            local_path_wanted,
        };
        Ok(self.client.stat(request).await?.into_inner())
    }

    /// Every video of `owner`'s, newest first, following the pages to the end.
    async fn list(&mut self, owner: &str) -> Vec<pb::FileInfo> {
        let mut files = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self.files_page(owner, 0, &page_token).await.unwrap();
            files.extend(page);
            if next.is_empty() {
                return files;
            }
            page_token = next;
        }
    }

    /// One page of `owner`'s videos and the token of the next.
    async fn files_page(
        &mut self,
        owner: &str,
        limit: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::FileInfo>, String), tonic::Status> {
        let request = pb::ListFilesRequest {
            bucket: pb::Bucket::Videos.into(),
            owner_id: owner.into(),
            any_owner: owner.is_empty(),
            limit,
            page_token: page_token.into(),
        };
        let page = self.client.list_files(request).await?.into_inner();
        Ok((page.files, page.next_page_token))
    }

    /// One page of `owner`'s jobs and the token of the next.
    async fn jobs_page(
        &mut self,
        owner: &str,
        limit: u32,
        page_token: &str,
    ) -> Result<(Vec<pb::Job>, String), tonic::Status> {
        let request = pb::ListJobsRequest {
            owner_id: owner.into(),
            any_owner: owner.is_empty(),
            limit,
            page_token: page_token.into(),
        };
        let page = self.client.list_jobs(request).await?.into_inner();
        Ok((page.jobs, page.next_page_token))
    }

    async fn create_job(&mut self, owner: &str, video_id: &str) -> Result<pb::Job, tonic::Status> {
        let request = pb::CreateJobRequest {
            owner_id: owner.into(),
            owner_email: format!("{owner}@example.com"),
            video_id: video_id.into(),
            original_filename: "holiday clip.mp4".into(),
            options: None,
            ..Default::default()
        };
        Ok(self
            .client
            .create_job(request)
            .await?
            .into_inner()
            .job
            .unwrap())
    }

    async fn get_job(&mut self, id: &str, owner: &str) -> Result<pb::Job, tonic::Status> {
        let request = pb::GetJobRequest {
            id: id.into(),
            owner_id: owner.into(),
            any_owner: owner.is_empty(),
        };
        Ok(self
            .client
            .get_job(request)
            .await?
            .into_inner()
            .job
            .unwrap())
    }

    async fn transition(
        &mut self,
        id: &str,
        from: pb::JobState,
        to: pb::JobState,
        mp3_id: &str,
        reason: &str,
    ) -> Result<pb::Job, tonic::Status> {
        let request = transition_request(id, from, to, mp3_id, reason);
        Ok(self
            .client
            .transition_job(request)
            .await?
            .into_inner()
            .job
            .unwrap())
    }

    /// Takes a queued job, as a converter does (QUEUED → CONVERTING).
    async fn claim(&mut self, id: &str) -> pb::Job {
        self.transition(id, pb::JobState::Queued, pb::JobState::Converting, "", "")
            .await
            .expect("a queued job can be claimed")
    }

    /// Ends a claimed job with its MP3, as a converter does (CONVERTING → DONE).
    async fn finish(&mut self, id: &str, mp3_id: &str) -> pb::Job {
        self.transition(id, pb::JobState::Converting, pb::JobState::Done, mp3_id, "")
            .await
            .expect("a claimed job can be finished")
    }

    /// Gives a claimed job back to the queue, as a worker that stops does (CONVERTING → QUEUED).
    async fn hand_back(&mut self, id: &str) -> pb::Job {
        self.transition(id, pb::JobState::Converting, pb::JobState::Queued, "", "")
            .await
            .expect("a claimed job can be handed back")
    }

    /// Ends a job as failed with `reason`, from whichever state `from` it is in.
    async fn fail(&mut self, id: &str, from: pb::JobState, reason: &str) -> pb::Job {
        self.transition(id, from, pb::JobState::Failed, "", reason)
            .await
            .expect("a job can fail from this state")
    }

    /// Files and chunks the backend holds, complete or not, for "nothing left behind" checks.
    async fn stored_objects(&self) -> usize {
        match &self.mongo {
            Some(mongo) => {
                let database = mongo.database();
                let mut total = 0;
                for collection in ["videos.files", "videos.chunks", "mp3s.files", "mp3s.chunks"] {
                    total += database
                        .collection::<mongodb::bson::Document>(collection)
                        .count_documents(doc! {})
                        .await
                        .unwrap() as usize;
                }
                total
            }
            None => {
                let root = self.dir.path().join("storage");
                ["incoming", "videos", "mp3s", "uploads"]
                    .iter()
                    .map(|dir| std::fs::read_dir(root.join(dir)).unwrap().count())
                    .sum()
            }
        }
    }

    /// Waits until the backend holds `expected` objects (an aborted upload is cleaned up just
    /// after the client sees its error).
    async fn wait_for_stored_objects(&self, expected: usize) {
        let mut stored = usize::MAX;
        for _ in 0..100 {
            stored = self.stored_objects().await;
            if stored == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the backend holds {stored} objects, expected {expected}");
    }
}

fn header(bucket: pb::Bucket, owner: &str) -> pb::UploadRequest {
    pb::UploadRequest {
        content: Some(pb::upload_request::Content::Header(pb::UploadHeader {
            bucket: bucket.into(),
            owner_id: owner.into(),
            filename: "holiday clip.mp4".into(),
            content_type: "video/mp4".into(),
            job_id: String::new(),
        })),
    }
}

fn chunk(bytes: &[u8]) -> pb::UploadRequest {
    pb::UploadRequest {
        content: Some(pb::upload_request::Content::Chunk(bytes.to_vec().into())),
    }
}

fn finish() -> pb::UploadRequest {
    pb::UploadRequest {
        content: Some(pb::upload_request::Content::Finish(pb::UploadFinish {})),
    }
}

fn transition_request(
    id: &str,
    from: pb::JobState,
    to: pb::JobState,
    mp3_id: &str,
    reason: &str,
) -> pb::TransitionJobRequest {
    pb::TransitionJobRequest {
        id: id.into(),
        from: from.into(),
        to: to.into(),
        mp3_id: mp3_id.into(),
        error_reason: reason.into(),
        claim: None,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

test_support::on_each!(Backend { Mongo => mongo, Local => local }: [
    upload_reports_size_and_checksum_and_downloads_byte_identical,
    ranged_downloads_return_exactly_the_requested_bytes,
    a_stat_says_where_the_bytes_lie_when_asked_and_they_are_a_file,
    other_owners_missing_and_malformed_ids_are_told_apart_without_leaking,
    an_upload_broken_off_midway_leaves_nothing_behind,
    the_size_limit_is_enforced_while_streaming,
    an_upload_must_start_with_one_header,
    files_are_listed_per_owner_newest_first_and_deleted,
    job_claims_are_compare_and_set_so_only_one_worker_wins,
    a_job_lives_through_progress_done_and_one_notification,
    deleting_a_job_removes_its_files,
    a_job_that_ends_keeps_only_the_mp3_it_names,
    files_and_jobs_survive_a_restart,
    listings_come_in_pages_that_together_hold_every_record_once,
    a_request_must_name_its_owner_or_ask_for_every_owner,
    a_job_keeps_its_audio_options_through_its_life_and_a_restart,
    a_job_with_impossible_audio_options_is_refused_and_not_recorded,
    an_idempotency_key_brings_back_its_first_job_until_that_job_is_deleted,
    webhook_endpoints_are_their_owners_and_a_rotation_signs_with_both_secrets_for_the_overlap,
    an_endpoints_attempts_are_logged_newest_first_and_its_health_follows_them,
]);

async fn upload_reports_size_and_checksum_and_downloads_byte_identical(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(3 * 1024 * 1024 + 17, 1);
    let info = storage.stored(pb::Bucket::Videos, ALICE, &data).await;
    assert_eq!(info.id.len(), 24);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.sha256, sha256_hex(&data));
    assert_eq!(info.owner_id, ALICE);
    assert_eq!(info.filename, "holiday clip.mp4");
    assert_eq!(info.content_type, "video/mp4");
    assert_eq!(info.bucket, i32::from(pb::Bucket::Videos));

    assert_eq!(storage.stat(&info.id, ALICE).await.unwrap(), info);
    let (downloaded_info, bytes) = storage
        .download(pb::Bucket::Videos, &info.id, ALICE, 0, None)
        .await
        .unwrap();
    assert_eq!(downloaded_info, info);
    assert!(bytes == data, "downloaded bytes differ from the upload");

    // An empty file is a file too.
    let empty = storage.stored(pb::Bucket::Mp3s, ALICE, &[]).await;
    assert_eq!(
        (empty.size, empty.sha256.as_str()),
        (0, sha256_hex(&[]).as_str())
    );
    let (_, bytes) = storage
        .download(pb::Bucket::Mp3s, &empty.id, ALICE, 0, None)
        .await
        .unwrap();
    assert!(bytes.is_empty());
}

async fn a_stat_says_where_the_bytes_lie_when_asked_and_they_are_a_file(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(1024 * 1024 + 5, 3);
    let info = storage.stored(pb::Bucket::Videos, ALICE, &data).await;
    let unasked = storage.stat_asking(&info.id, ALICE, false).await.unwrap();
    assert_eq!(
        (unasked.file.as_ref(), unasked.local_path.as_str()),
        (Some(&info), "")
    );

    for owner in [ALICE, ""] {
        let asked = storage.stat_asking(&info.id, owner, true).await.unwrap();
        assert_eq!(asked.file.as_ref(), Some(&info));
        match backend {
            Backend::Mongo => assert_eq!(asked.local_path, "", "GridFS keeps no files"),
            Backend::Local => {
                let path = std::path::Path::new(&asked.local_path);
                assert!(path.is_absolute(), "{path:?}");
                assert!(
                    std::fs::read(path).unwrap() == data,
                    "the file holds the bytes"
                );
            }
        }
    }
    // Whose file it is still counts, and a deleted file is nowhere.
    let bobs = storage.stat_asking(&info.id, BOB, true).await.unwrap_err();
    assert_eq!(bobs.code(), Code::NotFound);
    let delete = pb::DeleteRequest {
        bucket: pb::Bucket::Videos.into(),
        id: info.id.clone(),
        owner_id: ALICE.into(),
        any_owner: false,
    };
    storage.client.delete(delete).await.unwrap();
    let deleted = storage
        .stat_asking(&info.id, ALICE, true)
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), Code::NotFound);
}

async fn ranged_downloads_return_exactly_the_requested_bytes(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(3 * GRIDFS_CHUNK as usize + 1000, 2);
    let size = data.len() as u64;
    let id = storage.stored(pb::Bucket::Videos, ALICE, &data).await.id;
    for (offset, length) in [
        (0, Some(1)),
        (GRIDFS_CHUNK - 1, Some(2)),
        (GRIDFS_CHUNK, Some(GRIDFS_CHUNK)),
        (100, Some(2 * GRIDFS_CHUNK + 500)),
        (size - 10, None),
        (size, None),
        (12_345, None),
    ] {
        let (info, bytes) = storage
            .download(pb::Bucket::Videos, &id, ALICE, offset, length)
            .await
            .unwrap();
        assert_eq!(info.size, size, "the info always describes the whole file");
        let end = length.map_or(size, |length| offset + length) as usize;
        assert!(
            bytes == data[offset as usize..end],
            "range {offset}+{length:?} came back wrong"
        );
    }
    for (offset, length) in [(size - 1, Some(2)), (size + 1, None), (0, Some(size + 1))] {
        let status = storage
            .download(pb::Bucket::Videos, &id, ALICE, offset, length)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{offset}+{length:?}");
    }
}

async fn other_owners_missing_and_malformed_ids_are_told_apart_without_leaking(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let id = storage
        .stored(pb::Bucket::Videos, ALICE, b"alice's video")
        .await
        .id;
    let missing = "0123456789abcdef01234567";

    let not_yours = storage.stat(&id, BOB).await.unwrap_err();
    let not_there = storage.stat(missing, BOB).await.unwrap_err();
    assert_eq!(not_yours.code(), Code::NotFound);
    assert_eq!(
        not_yours.message(),
        not_there.message(),
        "another owner's file looks exactly like a missing one"
    );
    let status = storage
        .download(pb::Bucket::Videos, &id, BOB, 0, None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let delete = pb::DeleteRequest {
        bucket: pb::Bucket::Videos.into(),
        id: id.clone(),
        owner_id: BOB.into(),
        any_owner: false,
    };
    assert_eq!(
        storage.client.delete(delete).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        storage.stat(&id, ALICE).await.unwrap().id,
        id,
        "still there"
    );
    assert_eq!(
        storage.stat(&id, "").await.unwrap().id,
        id,
        "trusted callers see all"
    );

    for malformed in ["", "nope", "../../etc/passwd", "0123456789abcdef0123456Z"] {
        let status = storage.stat(malformed, ALICE).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{malformed:?}");
    }
    let wrong_bucket = storage
        .download(pb::Bucket::Mp3s, &id, ALICE, 0, None)
        .await
        .unwrap_err();
    assert_eq!(wrong_bucket.code(), Code::NotFound);
    let unspecified = storage
        .download(pb::Bucket::Unspecified, &id, ALICE, 0, None)
        .await
        .unwrap_err();
    assert_eq!(unspecified.code(), Code::InvalidArgument);

    let job = storage.create_job(ALICE, &id).await.unwrap();
    assert_eq!(
        storage.get_job(&job.id, BOB).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        storage.create_job(BOB, &id).await.unwrap_err().code(),
        Code::NotFound,
        "a job cannot be made from someone else's video"
    );
    assert_eq!(
        storage.get_job("bad", ALICE).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

async fn an_upload_broken_off_midway_leaves_nothing_behind(backend: Backend) {
    let storage = RunningStorage::start(backend).await;
    let (messages, outgoing) = mpsc::channel(4);
    let mut client = storage.client.clone();
    let call = tokio::spawn(async move { client.upload(ReceiverStream::new(outgoing)).await });
    messages
        .send(header(pb::Bucket::Videos, ALICE))
        .await
        .unwrap();
    let block = pseudo_random_bytes(256 * 1024, 3);
    for _ in 0..8 {
        messages.send(chunk(&block)).await.unwrap();
    }
    // Give the server time to store some of it, then stop without `finish`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(messages);
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    storage.wait_for_stored_objects(0).await;
    let mut storage = storage;
    assert!(storage.list(ALICE).await.is_empty());
}

async fn the_size_limit_is_enforced_while_streaming(backend: Backend) {
    let mut storage = RunningStorage::start_with(backend, |c| c.max_file_bytes = 1_000_000).await;
    let at_limit = pseudo_random_bytes(1_000_000, 4);
    storage.stored(pb::Bucket::Videos, ALICE, &at_limit).await;
    let before = storage.stored_objects().await;
    let over = pseudo_random_bytes(1_500_000, 5);
    let status = storage
        .upload(pb::Bucket::Videos, ALICE, &over)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("1000000"), "{}", status.message());
    storage.wait_for_stored_objects(before).await;
    assert_eq!(storage.list(ALICE).await.len(), 1);
}

async fn an_upload_must_start_with_one_header(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let cases = [
        vec![chunk(b"no header")],
        vec![],
        vec![
            header(pb::Bucket::Videos, ALICE),
            header(pb::Bucket::Videos, ALICE),
        ],
        vec![
            header(pb::Bucket::Unspecified, ALICE),
            chunk(b"x"),
            finish(),
        ],
        vec![header(pb::Bucket::Videos, ""), chunk(b"x"), finish()],
        vec![header(pb::Bucket::Videos, ALICE), finish(), chunk(b"late")],
    ];
    for (case, messages) in cases.into_iter().enumerate() {
        let status = storage
            .client
            .upload(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "case {case}");
    }
    storage.wait_for_stored_objects(0).await;
}

async fn files_are_listed_per_owner_newest_first_and_deleted(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let mut alices = Vec::new();
    for n in 0..3u8 {
        alices.push(storage.stored(pb::Bucket::Videos, ALICE, &[n]).await.id);
        // Upload times are kept to the millisecond.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    storage.stored(pb::Bucket::Videos, BOB, b"bob").await;
    let listed: Vec<String> = storage
        .list(ALICE)
        .await
        .into_iter()
        .map(|f| f.id)
        .collect();
    alices.reverse();
    assert_eq!(listed, alices);
    assert_eq!(storage.list(BOB).await.len(), 1);

    let delete = pb::DeleteRequest {
        bucket: pb::Bucket::Videos.into(),
        id: alices[0].clone(),
        owner_id: ALICE.into(),
        any_owner: false,
    };
    storage.client.delete(delete.clone()).await.unwrap();
    assert_eq!(
        storage.client.delete(delete).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(storage.list(ALICE).await.len(), 2);
    assert_eq!(
        storage.stat(&alices[0], ALICE).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn job_claims_are_compare_and_set_so_only_one_worker_wins(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    assert_eq!(job.state, i32::from(pb::JobState::Queued));
    assert_eq!(job.video_id, video.id);

    let claims = (0..8).map(|_| {
        let mut client = storage.client.clone();
        let request = transition_request(
            &job.id,
            pb::JobState::Queued,
            pb::JobState::Converting,
            "",
            "",
        );
        tokio::spawn(async move { client.transition_job(request).await })
    });
    let outcomes = futures::future::join_all(claims).await;
    let (won, lost): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .map(|joined| joined.unwrap())
        .partition(|outcome| outcome.is_ok());
    assert_eq!(won.len(), 1, "exactly one claim wins");
    for outcome in lost {
        let status = outcome.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("converting"),
            "{}",
            status.message()
        );
    }
    let claimed = storage.get_job(&job.id, ALICE).await.unwrap();
    assert_eq!(claimed.state, i32::from(pb::JobState::Converting));
    assert_eq!(claimed.attempts, 1);

    // A worker that stops hands the job back, and the next claim counts a second attempt.
    storage.hand_back(&job.id).await;
    let reclaimed = storage.claim(&job.id).await;
    assert_eq!(reclaimed.attempts, 2);
    let illegal = storage
        .transition(&job.id, pb::JobState::Done, pb::JobState::Queued, "", "")
        .await
        .unwrap_err();
    assert_eq!(illegal.code(), Code::InvalidArgument);
}

async fn a_job_lives_through_progress_done_and_one_notification(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    let notify = pb::MarkJobNotifiedRequest { id: job.id.clone() };
    assert_eq!(
        storage
            .client
            .mark_job_notified(notify.clone())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition,
        "an unfinished job cannot be notified"
    );
    storage.claim(&job.id).await;
    let progress = pb::UpdateJobProgressRequest {
        id: job.id.clone(),
        progress_percent: 40,
        claim: None,
    };
    storage.client.update_job_progress(progress).await.unwrap();
    assert_eq!(
        storage
            .get_job(&job.id, ALICE)
            .await
            .unwrap()
            .progress_percent,
        40
    );

    let mp3 = storage.stored(pb::Bucket::Mp3s, ALICE, b"mp3").await;
    let done = storage.finish(&job.id, &mp3.id).await;
    assert_eq!(done.state, i32::from(pb::JobState::Done));
    assert_eq!(
        (done.mp3_id.as_str(), done.progress_percent),
        (mp3.id.as_str(), 100)
    );
    assert!(done.updated_at.unwrap().seconds >= done.created_at.unwrap().seconds);

    let first = storage
        .client
        .mark_job_notified(notify.clone())
        .await
        .unwrap();
    let second = storage.client.mark_job_notified(notify).await.unwrap();
    assert!(!first.into_inner().already_notified);
    assert!(second.into_inner().already_notified);
    assert!(storage.get_job(&job.id, ALICE).await.unwrap().notified);

    let listed = storage
        .client
        .list_jobs(pb::ListJobsRequest {
            owner_id: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1);
    let bobs = pb::ListJobsRequest {
        owner_id: BOB.into(),
        ..Default::default()
    };
    assert!(
        storage
            .client
            .list_jobs(bobs)
            .await
            .unwrap()
            .into_inner()
            .jobs
            .is_empty()
    );

    // A failed job carries its reason.
    let other = storage.create_job(ALICE, &video.id).await.unwrap();
    let failed = storage
        .fail(&other.id, pb::JobState::Queued, "no audio stream")
        .await;
    assert_eq!(failed.error_reason, "no audio stream");
}

async fn deleting_a_job_removes_its_files(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let mp3 = storage.stored(pb::Bucket::Mp3s, ALICE, b"m").await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    storage.claim(&job.id).await;
    storage.finish(&job.id, &mp3.id).await;
    let by_bob = pb::DeleteJobRequest {
        id: job.id.clone(),
        owner_id: BOB.into(),
        any_owner: false,
    };
    assert_eq!(
        storage.client.delete_job(by_bob).await.unwrap_err().code(),
        Code::NotFound
    );
    let by_alice = pb::DeleteJobRequest {
        id: job.id.clone(),
        owner_id: ALICE.into(),
        any_owner: false,
    };
    storage.client.delete_job(by_alice).await.unwrap();
    assert_eq!(
        storage.get_job(&job.id, ALICE).await.unwrap_err().code(),
        Code::NotFound
    );
    storage.wait_for_stored_objects(0).await;
}

async fn a_job_that_ends_keeps_only_the_mp3_it_names(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    storage.claim(&job.id).await;
    // A converter stored an MP3 and died before recording it; the next attempt stores its own.
    let abandoned = storage
        .upload_for_job(pb::Bucket::Mp3s, ALICE, &job.id, b"first attempt")
        .await
        .unwrap();
    let kept = storage
        .upload_for_job(pb::Bucket::Mp3s, ALICE, &job.id, b"second attempt")
        .await
        .unwrap();
    // Alice's MP3s of other jobs, or of none, are not this job's business.
    let unrelated = storage.stored(pb::Bucket::Mp3s, ALICE, b"unrelated").await;
    storage.finish(&job.id, &kept.id).await;

    let mp3s = pb::ListFilesRequest {
        bucket: pb::Bucket::Mp3s.into(),
        owner_id: ALICE.into(),
        ..Default::default()
    };
    let mut left: Vec<String> = storage
        .client
        .list_files(mp3s)
        .await
        .unwrap()
        .into_inner()
        .files
        .into_iter()
        .map(|file| file.id)
        .collect();
    left.sort();
    let mut expected = vec![kept.id.clone(), unrelated.id.clone()];
    expected.sort();
    assert_eq!(left, expected, "the abandoned {} is gone", abandoned.id);
}

async fn files_and_jobs_survive_a_restart(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let data = pseudo_random_bytes(600_000, 6);
    let video = storage.stored(pb::Bucket::Videos, ALICE, &data).await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    let mut storage = storage.restart().await;
    assert!(storage.alices_video(&video.id).await == data);
    assert_eq!(storage.get_job(&job.id, ALICE).await.unwrap(), job);
}

/// CreateJob for `owner`'s `video_id` under idempotency `key`, with `fingerprint`.
fn keyed_job(owner: &str, video_id: &str, key: &str, fingerprint: &str) -> pb::CreateJobRequest {
    pb::CreateJobRequest {
        owner_id: owner.into(),
        owner_email: format!("{owner}@example.com"),
        video_id: video_id.into(),
        original_filename: "holiday clip.mp4".into(),
        idempotency_key: key.into(),
        request_fingerprint: fingerprint.into(),
        ..Default::default()
    }
}

async fn an_idempotency_key_brings_back_its_first_job_until_that_job_is_deleted(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let first_copy = storage.stored(pb::Bucket::Videos, ALICE, b"v1").await;
    let retry_copy = storage.stored(pb::Bucket::Videos, ALICE, b"v1").await;
    let bobs_video = storage.stored(pb::Bucket::Videos, BOB, b"v1").await;
    let mut create = async |request: pb::CreateJobRequest| {
        storage
            .client
            .create_job(request)
            .await
            .map(|response| response.into_inner())
    };

    let first = create(keyed_job(ALICE, &first_copy.id, "k-1", "digest-a"))
        .await
        .unwrap();
    assert!(!first.replayed);
    let job = first.job.unwrap();
    let again = create(keyed_job(ALICE, &retry_copy.id, "k-1", "digest-a"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        again.job.unwrap(),
        job,
        "the first job, not one for the retry's copy"
    );

    let other_request = create(keyed_job(ALICE, &retry_copy.id, "k-1", "digest-b"))
        .await
        .unwrap_err();
    assert_eq!(other_request.code(), Code::AlreadyExists);
    let bobs = create(keyed_job(BOB, &bobs_video.id, "k-1", "digest-a"))
        .await
        .unwrap();
    assert!(!bobs.replayed, "a key is its owner's own");
    for (key, fingerprint) in [("k 2", "digest-a"), ("k-2", ""), (&*"k".repeat(256), "d")] {
        let refused = create(keyed_job(ALICE, &retry_copy.id, key, fingerprint))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{key:?}");
    }
    let (alices_jobs, _) = storage.jobs_page(ALICE, 0, "").await.unwrap();
    assert_eq!(alices_jobs.len(), 1);

    let mut storage = storage.restart().await;
    let after_restart = storage
        .client
        .create_job(keyed_job(ALICE, &retry_copy.id, "k-1", "digest-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(after_restart.replayed);
    assert_eq!(after_restart.job.unwrap().id, job.id);

    let delete = pb::DeleteJobRequest {
        id: job.id.clone(),
        owner_id: ALICE.into(),
        any_owner: false,
    };
    storage.client.delete_job(delete).await.unwrap();
    let freed = storage
        .client
        .create_job(keyed_job(ALICE, &retry_copy.id, "k-1", "digest-b"))
        .await
        .unwrap()
        .into_inner();
    assert!(!freed.replayed, "deleting the job frees its key");
    assert_ne!(freed.job.unwrap().id, job.id);
}

fn m4a_options() -> pb::AudioOptions {
    pb::AudioOptions {
        preset: "podcast".into(),
        format: pb::AudioFormat::M4a.into(),
        bitrate_kbps: Some(160),
        sample_rate: Some(48000),
        channels: Some(1),
        start_ms: Some(1_500),
        end_ms: Some(61_000),
        normalize: Some(pb::Loudness {
            target_lufs: -14.0,
            true_peak_dbtp: -2.0,
        }),
        tags: Some(pb::AudioTags {
            title: Some("Épisode 1 — ünïcode".into()),
            artist: Some("Someone".into()),
            year: Some("2024".into()),
            track: Some("3/12".into()),
            ..Default::default()
        }),
        cover: pb::CoverArt::None.into(),
        id3v2_version: 3,
        ..Default::default()
    }
}

async fn a_job_keeps_its_audio_options_through_its_life_and_a_restart(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let request = pb::CreateJobRequest {
        owner_id: ALICE.into(),
        owner_email: "alice@example.com".into(),
        video_id: video.id.clone(),
        original_filename: "talk.mp4".into(),
        options: Some(m4a_options()),
        ..Default::default()
    };
    let job = storage
        .client
        .create_job(request)
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.options, Some(m4a_options()));
    storage.claim(&job.id).await;
    let mp3 = storage.stored(pb::Bucket::Mp3s, ALICE, b"m4a").await;
    let done = storage.finish(&job.id, &mp3.id).await;
    assert_eq!(done.options, Some(m4a_options()));
    let mut storage = storage.restart().await;
    let again = storage.get_job(&job.id, ALICE).await.unwrap();
    assert_eq!(again.options, Some(m4a_options()));

    // A job created without options shows the defaults, spelled out.
    let plain = storage.create_job(ALICE, &video.id).await.unwrap();
    let options = plain.options.expect("the defaults are shown");
    assert_eq!(options.format, i32::from(pb::AudioFormat::Mp3));
    assert_eq!(options.cover, i32::from(pb::CoverArt::Auto));
    assert_eq!((options.quality, options.bitrate_kbps), (None, None));
}

async fn a_job_with_impossible_audio_options_is_refused_and_not_recorded(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"v").await;
    let impossible = [
        (
            "bitrate",
            pb::AudioOptions {
                bitrate_kbps: Some(7),
                ..Default::default()
            },
        ),
        (
            "end",
            pb::AudioOptions {
                start_ms: Some(5_000),
                end_ms: Some(4_000),
                ..Default::default()
            },
        ),
        (
            "format",
            pb::AudioOptions {
                format: 99,
                ..Default::default()
            },
        ),
        (
            "title",
            pb::AudioOptions {
                tags: Some(pb::AudioTags {
                    title: Some("t".repeat(100_000)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    for (option, options) in impossible {
        let request = pb::CreateJobRequest {
            owner_id: ALICE.into(),
            owner_email: "alice@example.com".into(),
            video_id: video.id.clone(),
            original_filename: "talk.mp4".into(),
            options: Some(options),
            ..Default::default()
        };
        let status = storage.client.create_job(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{option}");
        assert!(
            status.message().contains(&format!("`{option}`")),
            "{option}: {}",
            status.message()
        );
    }
    let (jobs, _) = storage.jobs_page(ALICE, 0, "").await.unwrap();
    assert!(jobs.is_empty(), "nothing was recorded: {jobs:?}");
}

async fn listings_come_in_pages_that_together_hold_every_record_once(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    // Created in quick succession, so several share a millisecond: the pages must still split
    // them without losing or repeating one.
    let mut videos = Vec::new();
    let mut jobs = Vec::new();
    for n in 0..7u8 {
        let video = storage.stored(pb::Bucket::Videos, ALICE, &[n; 16]).await;
        jobs.push(storage.create_job(ALICE, &video.id).await.unwrap().id);
        videos.push(video.id);
    }
    storage.stored(pb::Bucket::Videos, BOB, b"bob's").await;

    let mut pages = Vec::new();
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = storage.files_page(ALICE, 3, &token).await.unwrap();
        pages.push(page.len());
        listed.extend(page.into_iter().map(|file| file.id));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, [3, 3, 1], "pages of at most the limit");
    let mut newest_first = videos.clone();
    newest_first.reverse();
    assert_eq!(
        listed, newest_first,
        "every video of alice's once, newest first"
    );

    let (first, next) = storage.jobs_page(ALICE, 4, "").await.unwrap();
    let (rest, last) = storage.jobs_page(ALICE, 4, &next).await.unwrap();
    assert!(last.is_empty(), "the second page is the last");
    let listed: Vec<String> = first.into_iter().chain(rest).map(|job| job.id).collect();
    jobs.reverse();
    assert_eq!(listed, jobs);

    // A listing that fits in one page has no next page.
    let (all, next) = storage.jobs_page(ALICE, 0, "").await.unwrap();
    assert_eq!((all.len(), next.as_str()), (7, ""));
    for bad in ["nonsense", "12.zz", "1.0123456789abcdef0123456"] {
        let status = storage.jobs_page(ALICE, 2, bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
    }
}

async fn a_request_must_name_its_owner_or_ask_for_every_owner(backend: Backend) {
    let mut storage = RunningStorage::start(backend).await;
    let video = storage.stored(pb::Bucket::Videos, ALICE, b"video").await;
    let job = storage.create_job(ALICE, &video.id).await.unwrap();
    let neither = pb::GetJobRequest {
        id: job.id.clone(),
        owner_id: String::new(),
        any_owner: false,
    };
    let both = pb::GetJobRequest {
        id: job.id.clone(),
        owner_id: ALICE.into(),
        any_owner: true,
    };
    for (case, request) in [("neither", neither), ("both", both)] {
        let status = storage.client.get_job(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
    }
    let unnamed = pb::ListFilesRequest {
        bucket: pb::Bucket::Videos.into(),
        ..Default::default()
    };
    let status = storage.client.list_files(unnamed).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let unnamed = pb::DeleteRequest {
        bucket: pb::Bucket::Videos.into(),
        id: video.id.clone(),
        ..Default::default()
    };
    let status = storage.client.delete(unnamed).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // Naming the owner, or every owner, works.
    assert_eq!(storage.get_job(&job.id, ALICE).await.unwrap().id, job.id);
    assert_eq!(storage.get_job(&job.id, "").await.unwrap().id, job.id);
    assert_eq!(storage.stat(&video.id, "").await.unwrap().id, video.id);
}

#[tokio::test]
async fn gridfs_chunks_are_indexed_from_the_start_whichever_upload_comes_first() {
    let storage = RunningStorage::start(Backend::Mongo).await;
    let database = storage.mongo.as_ref().unwrap().database();
    // Before any upload: the driver would make them only before its own first one, and a
    // resumable upload, which stores its chunks itself, may come first.
    for bucket in ["videos", "mp3s"] {
        let indexes: Vec<mongodb::IndexModel> = database
            .collection::<mongodb::bson::Document>(&format!("{bucket}.chunks"))
            .list_indexes()
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        let chunks = indexes
            .iter()
            .find(|index| index.keys == doc! { "files_id": 1, "n": 1 })
            .unwrap_or_else(|| panic!("no chunks index on {bucket}: {indexes:?}"));
        let unique = chunks.options.as_ref().and_then(|options| options.unique);
        assert_eq!(unique, Some(true), "{chunks:?}");
    }
}

#[tokio::test]
async fn the_local_backend_clears_what_a_crash_left_behind_at_start_up() {
    let mut storage = RunningStorage::start(Backend::Local).await;
    let kept = storage.stored(pb::Bucket::Videos, ALICE, b"kept").await;
    let root = storage.dir.path().join("storage");
    // What a crash can leave: an upload still in `incoming`, bytes moved in without a record.
    std::fs::write(
        root.join("incoming").join("0123456789abcdef01234567"),
        b"half",
    )
    .unwrap();
    std::fs::write(
        root.join("videos").join("76543210fedcba9876543210"),
        b"orphan",
    )
    .unwrap();
    let mut storage = storage.restart().await;
    // Answering a call means the start-up sweep has run.
    assert_eq!(storage.stat(&kept.id, ALICE).await.unwrap().id, kept.id);
    assert_eq!(std::fs::read_dir(root.join("incoming")).unwrap().count(), 0);
    assert!(
        !root
            .join("videos")
            .join("76543210fedcba9876543210")
            .exists()
    );
}

#[tokio::test]
async fn a_draining_storage_is_not_ready_while_a_download_in_flight_finishes() {
    use pb::download_response::Content;
    let mut storage = RunningStorage::start(Backend::Local).await;
    // Far more than the connection's flow-control windows hold: the download stays in flight
    // until this test reads it.
    let data = pseudo_random_bytes(32 * 1024 * 1024, 9);
    let video = storage.stored(pb::Bucket::Videos, ALICE, &data).await;
    let ops_url = storage.service.ops_url();
    let request = pb::DownloadRequest {
        bucket: pb::Bucket::Videos.into(),
        id: video.id.clone(),
        owner_id: ALICE.into(),
        ..Default::default()
    };
    let mut download = storage.client.download(request).await.unwrap().into_inner();
    assert!(matches!(
        download.next().await.unwrap().unwrap().content,
        Some(Content::Info(_))
    ));

    let stopping = tokio::spawn(storage.service.stop());
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http.get(format!("{ops_url}/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still says {} while draining",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut bytes = Vec::new();
    while let Some(message) = download.next().await {
        match message.unwrap().content {
            Some(Content::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
            other => panic!("only chunks may follow the info, got {other:?}"),
        }
    }
    assert!(bytes == data, "the download in flight finished whole");
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn serves_health_reflection_and_counts_bytes_in_metrics() {
    test_support::init_tracing();
    let dir = temp_dir();
    let server = Running::<storage::App>::start(configs::storage(dir.path(), None))
        .await
        .unwrap();
    let ops_url = server.ops_url();
    let channel = server.grpc_channel().await.unwrap();
    let services = test_support::grpc::reflected_services(channel.clone())
        .await
        .unwrap();
    assert!(
        services.contains(&storage::SERVICE_NAME.to_string()),
        "{services:?}"
    );
    let status = test_support::grpc::health_status(channel.clone(), storage::SERVICE_NAME)
        .await
        .unwrap();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let mut client = StorageServiceClient::new(channel);
    let messages = vec![
        header(pb::Bucket::Videos, ALICE),
        chunk(&[7; 1234]),
        finish(),
    ];
    client.upload(tokio_stream::iter(messages)).await.unwrap();
    let http = reqwest::Client::new();
    let ready = http.get(format!("{ops_url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = test_support::scrape(&format!("{ops_url}/metrics")).await;
    let bytes_in = metrics
        .lines()
        .find(|line| line.starts_with("storage_bytes_in_total{bucket=\"videos\"}"))
        .unwrap_or_else(|| panic!("no bytes-in counter in:\n{metrics}"));
    let counted: f64 = bytes_in.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 1234.0, "{bytes_in}");
    assert!(metrics.contains("storage_active_streams"), "{metrics}");
    // Described where it is named, so the exposition explains it.
    assert!(
        metrics.contains("# HELP storage_bytes_in_total Bytes of files received"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_mongodb_backend_speaks_tls_to_its_server_and_refuses_one_it_cannot_verify() {
    use clients::{Owner, StorageClient};
    use test_support::tls::TestCa;

    let certs = temp_dir();
    let ca = TestCa::new("mp3converter MongoDB test CA");
    let mongo = test_support::MongoServer::start_tls(ca.server_files(certs.path()))
        .await
        .unwrap();
    let data = temp_dir();
    let config = |uri: String| storage::Config {
        mongodb_uri: Some(uri.into()),
        mongodb_database: test_support::unique_name("t_"),
        ..configs::storage(data.path(), None)
    };

    // The MONGODB_URI's own options are the settings: tls=true and the CA file.
    let service = Running::<storage::App>::start(config(mongo.uri()))
        .await
        .unwrap();
    let client = StorageClient::connect_lazy(&service.url(), None).unwrap();
    let bytes = pseudo_random_bytes(600 * 1024, 5);
    let mut upload = client.upload(pb::UploadHeader {
        bucket: pb::Bucket::Videos.into(),
        owner_id: ALICE.into(),
        filename: "over-tls.mp4".into(),
        content_type: "video/mp4".into(),
        job_id: String::new(),
    });
    assert!(upload.send(bytes.clone().into()).await);
    let stored = upload.finish().await.unwrap();
    let mut downloaded = Vec::new();
    let mut stream = client
        .download(
            pb::Bucket::Videos,
            &stored.id,
            &Owner::One(ALICE.into()),
            0,
            None,
        )
        .await
        .unwrap();
    while let Some(chunk) = stream.next().await {
        downloaded.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(downloaded, bytes, "the file came back whole over TLS");

    // Another authority's CA file, or no TLS at all: storage refuses to start.
    let other = temp_dir();
    let other_ca = TestCa::new("another authority").write_to(other.path());
    let foreign = format!(
        "{}&tls=true&tlsCAFile={}",
        mongo.plain_uri(),
        other_ca.display()
    );
    for (what, uri) in [
        ("another authority", foreign),
        ("no TLS", mongo.plain_uri()),
    ] {
        let refused = storage::App::build(config(uri)).await;
        assert!(refused.is_err(), "storage started trusting {what}");
    }
}

fn endpoint_request(owner: &str, url: &str) -> pb::CreateWebhookEndpointRequest {
    pb::CreateWebhookEndpointRequest {
        owner_id: owner.into(),
        owner_email: format!("{owner}@example.com"),
        url: url.into(),
        events: vec!["job.succeeded".into()],
        description: "the CI's receiver".into(),
        secret: "whsec_c2VjcmV0LW9uZS1zZWNyZXQtb25lLXNlY3JldA==".into(),
    }
}

async fn webhook_endpoints_are_their_owners_and_a_rotation_signs_with_both_secrets_for_the_overlap(
    backend: Backend,
) {
    let mut storage = RunningStorage::start(backend).await;
    let created = async |storage: &mut RunningStorage, request| {
        storage
            .client
            .create_webhook_endpoint(request)
            .await
            .map(|answer| answer.into_inner().endpoint.unwrap())
    };
    let first = created(&mut storage, endpoint_request(ALICE, "https://a.example/1"))
        .await
        .unwrap();
    let second = created(&mut storage, endpoint_request(ALICE, "https://a.example/2"))
        .await
        .unwrap();
    created(&mut storage, endpoint_request(BOB, "https://b.example/"))
        .await
        .unwrap();
    assert_eq!(first.url, "https://a.example/1");
    assert_eq!(first.events, ["job.succeeded"]);
    assert_eq!(first.secrets.len(), 1);
    assert!(first.secrets[0].expires_at.is_none());

    let list = |owner: &str| pb::ListWebhookEndpointsRequest {
        owner_id: owner.into(),
    };
    let alices = storage
        .client
        .list_webhook_endpoints(list(ALICE))
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    let urls: Vec<&str> = alices.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://a.example/2", "https://a.example/1"],
        "newest first"
    );

    // Bob cannot see, rotate or delete Alice's endpoint: it is not found for him.
    let get = |owner: &str| pb::GetWebhookEndpointRequest {
        id: first.id.clone(),
        owner_id: owner.into(),
        any_owner: false,
    };
    let status = storage
        .client
        .get_webhook_endpoint(get(BOB))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let rotate = |owner: &str, secret: &str, overlap_seconds| pb::RotateWebhookSecretRequest {
        id: first.id.clone(),
        owner_id: owner.into(),
        secret: secret.into(),
        overlap_seconds,
    };
    let status = storage
        .client
        .rotate_webhook_secret(rotate(BOB, "whsec_Ym9i", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let delete = |owner: &str, id: &str| pb::DeleteWebhookEndpointRequest {
        id: id.into(),
        owner_id: owner.into(),
        any_owner: false,
    };
    let status = storage
        .client
        .delete_webhook_endpoint(delete(BOB, &first.id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A rotation: the new secret first, the old one beside it until the overlap ends.
    let rotated = storage
        .client
        .rotate_webhook_secret(rotate(ALICE, "whsec_bmV3LXNlY3JldA==", 1))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    let secrets: Vec<&str> = rotated.secrets.iter().map(|s| s.secret.as_str()).collect();
    assert_eq!(
        secrets,
        ["whsec_bmV3LXNlY3JldA==", first.secrets[0].secret.as_str()]
    );
    assert!(rotated.secrets[1].expires_at.is_some());
    let status = storage
        .client
        .rotate_webhook_secret(rotate(ALICE, "not-a-secret", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // Kept across a restart; the old secret is gone once its overlap (1 s) ended.
    let mut storage = storage.restart().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let kept = storage
        .client
        .get_webhook_endpoint(get(ALICE))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    let secrets: Vec<&str> = kept.secrets.iter().map(|s| s.secret.as_str()).collect();
    assert_eq!(secrets, ["whsec_bmV3LXNlY3JldA=="]);

    storage
        .client
        .delete_webhook_endpoint(delete(ALICE, &first.id))
        .await
        .unwrap();
    let status = storage
        .client
        .get_webhook_endpoint(get(ALICE))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let left = storage
        .client
        .list_webhook_endpoints(list(ALICE))
        .await
        .unwrap()
        .into_inner()
        .endpoints;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, second.id);

    // An owner has at most 20 endpoints.
    for n in 1..20 {
        created(
            &mut storage,
            endpoint_request(ALICE, &format!("https://a.example/{n}x")),
        )
        .await
        .unwrap();
    }
    let status = created(
        &mut storage,
        endpoint_request(ALICE, "https://a.example/21"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("at most 20"),
        "{}",
        status.message()
    );
    let mut bad = endpoint_request(ALICE, "https://a.example/bad");
    bad.secret = "hunter2".into();
    let status = created(&mut storage, bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

fn attempt(message_id: &str, status_code: u32, delivered: bool) -> pb::WebhookAttempt {
    pb::WebhookAttempt {
        message_id: message_id.into(),
        event_type: "job.succeeded".into(),
        attempted_at: None,
        duration_ms: 12,
        status_code,
        error: String::new(),
        delivered,
        body: br#"{"type":"job.succeeded"}"#.to_vec().into(),
        given_up: false,
    }
}

async fn an_endpoints_attempts_are_logged_newest_first_and_its_health_follows_them(
    backend: Backend,
) {
    let mut storage = RunningStorage::start(backend).await;
    let endpoint = storage
        .client
        .create_webhook_endpoint(endpoint_request(ALICE, "https://a.example/log"))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    let record = |attempt, gone, disable_after_seconds| pb::RecordWebhookAttemptRequest {
        endpoint_id: endpoint.id.clone(),
        attempt: Some(attempt),
        gone,
        disable_after_seconds,
    };
    // A failure starts a streak; a success ends it.
    let answer = storage
        .client
        .record_webhook_attempt(record(attempt("msg_1", 503, false), false, 3600))
        .await
        .unwrap()
        .into_inner();
    let failing = answer.endpoint.unwrap();
    assert!(failing.failing_since.is_some() && !answer.just_disabled);
    let answer = storage
        .client
        .record_webhook_attempt(record(attempt("msg_1", 204, true), false, 3600))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.endpoint.unwrap().failing_since.is_none());
    // A 410 disables it, once.
    let answer = storage
        .client
        .record_webhook_attempt(record(attempt("msg_2", 410, false), true, 3600))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.just_disabled);
    let disabled = answer.endpoint.unwrap();
    assert_eq!(disabled.disabled_reason, "the receiver answered 410 Gone");
    assert!(disabled.disabled_at.is_some());
    let answer = storage
        .client
        .record_webhook_attempt(record(attempt("msg_3", 410, false), true, 3600))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.just_disabled, "only the first disables it");

    // Its owner turns it back on; nobody else can, nor read its log.
    let enable = |owner: &str| pb::EnableWebhookEndpointRequest {
        id: endpoint.id.clone(),
        owner_id: owner.into(),
    };
    let status = storage
        .client
        .enable_webhook_endpoint(enable(BOB))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let enabled = storage
        .client
        .enable_webhook_endpoint(enable(ALICE))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert!(enabled.disabled_at.is_none() && enabled.disabled_reason.is_empty());
    let list = |owner: &str| pb::ListWebhookAttemptsRequest {
        endpoint_id: endpoint.id.clone(),
        owner_id: owner.into(),
        any_owner: false,
    };
    let status = storage
        .client
        .list_webhook_attempts(list(BOB))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // The newest 100 are kept, newest first, with their bodies.
    for n in 4..=103 {
        storage
            .client
            .record_webhook_attempt(record(attempt(&format!("msg_{n}"), 500, false), false, 0))
            .await
            .unwrap();
    }
    let logged = storage
        .client
        .list_webhook_attempts(list(ALICE))
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert_eq!(logged.len(), 100);
    assert_eq!(logged[0].message_id, "msg_103");
    assert_eq!(logged[99].message_id, "msg_4");
    assert_eq!(&logged[0].body[..], br#"{"type":"job.succeeded"}"#);
    assert_eq!(logged[0].status_code, 500);
    assert!(logged[0].attempted_at.is_some());

    // Deleted with its endpoint: the log is no longer there to read.
    let mut storage = storage.restart().await;
    storage
        .client
        .delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest {
            id: endpoint.id.clone(),
            owner_id: ALICE.into(),
            any_owner: false,
        })
        .await
        .unwrap();
    let again = storage
        .client
        .create_webhook_endpoint(endpoint_request(ALICE, "https://a.example/other"))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert_ne!(again.id, endpoint.id);
    let status = storage
        .client
        .list_webhook_attempts(list(ALICE))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
