//! The embedded queue, the other transport: what stands in for RabbitMQ when `AMQP_URL` is
//! unset, so the whole system runs on one machine with nothing else installed.
//!
//! It is one SQLite file (`DATA_DIR/queue.sqlite`) that every process on the machine opens: the
//! gateway publishes into it, the workers lease from it. SQLite's locking makes each statement
//! atomic across processes, and WAL with `synchronous=FULL` makes a publish durable before it
//! returns, the same promise a RabbitMQ publisher confirm gives.
//!
//! Delivery works like a visibility timeout: a consumer *leases* a message for a short time and
//! keeps renewing the lease while it works. If the consumer dies (SIGKILL, power loss), its
//! leases run out and the messages are delivered again, to whichever process leases next,
//! the same process after a restart included. Acknowledging deletes the message; handing it
//! back ends the lease at once; a retry makes it available again after a delay with its attempt
//! counted; dead-lettering moves it to `{queue}.dead`, where it stays for an operator.

//!
//! [`consume`] is its consumer loop: lease up to the concurrency at once (polling while the
//! queue is empty), renew each lease while its work runs, and settle by the handler's answer.

use crate::config::QueueConfig;
use crate::consumer::{self, Delivery, Handler, Settlement, Worker};
use anyhow::Context;
use service_kit::Shutdown;
use service_kit::ops::Readiness;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, sqlite::SqliteRow};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// How often a worker looks at the queue for [`BUSY_SPELL`] after it last found a message. A
/// worker in the middle of a stream of messages (a notifier behind busy converters, say) then
/// picks up the next within 50 ms; after that the pause doubles up to
/// [`POLL_INTERVAL`], so an idle worker costs no more than one look per interval.
const BUSY_POLL_PAUSE: Duration = Duration::from_millis(50);
/// How long after its last message a worker keeps looking every [`BUSY_POLL_PAUSE`].
const BUSY_SPELL: Duration = Duration::from_secs(1);
/// How often an idle worker looks at the queue again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The longest pause after the queue file failed, before trying again.
const MAX_ERROR_PAUSE: Duration = Duration::from_secs(10);

/// How long a process may wait for another one's write lock before a statement fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue file's name inside the data directory.
pub const FILE_NAME: &str = "queue.sqlite";

/// A failure of the queue file (it could not be opened, or a statement failed).
#[derive(Debug, thiserror::Error)]
#[error("embedded queue: {0}")]
pub struct QueueError(#[from] sqlx::Error);

/// The embedded queue: a handle on the shared SQLite file (cheap to clone).
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    pool: SqlitePool,
    path: PathBuf,
}

/// A message leased by one consumer. Settle it with [`EmbeddedQueue::ack`],
/// [`EmbeddedQueue::release`], [`EmbeddedQueue::retry_later`] or
/// [`EmbeddedQueue::dead_letter`]; while working, keep it with [`EmbeddedQueue::renew`].
#[derive(Debug, Clone)]
pub struct Leased {
    id: i64,
    token: String,
    /// The queue it was leased from.
    pub queue: String,
    /// The message's bytes, as published.
    pub body: Vec<u8>,
    /// 1 for the first attempt; each retry counts up.
    pub attempt: u32,
    /// How many times this attempt was delivered (more than 1: a consumer went away with it).
    pub deliveries: u32,
}

impl EmbeddedQueue {
    /// Opens (creating if needed) the queue file at `path`.
    ///
    /// Several processes (or the services of one `up`) open the file at the same moment. The
    /// first to switch a new file to WAL, or to create its table, needs the write lock; SQLite
    /// answers BUSY at once, without waiting out the busy timeout, to an opener that would
    /// otherwise deadlock with another. So an opener that meets a lock tries again, for as long as
    /// a statement would wait for one.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| QueueError(sqlx::Error::Io(e)))?;
        }
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(20);
        loop {
            match Self::open_once(path).await {
                Err(error) if is_locked(&error.0) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(path = %path.display(), "queue file locked while opening; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                opened => return opened,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                queue TEXT NOT NULL,
                body BLOB NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 1,
                deliveries INTEGER NOT NULL DEFAULT 0,
                available_at INTEGER NOT NULL,
                lease_token TEXT,
                lease_until INTEGER,
                reason TEXT
            )",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, available_at, id)",
        )
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            path: path.to_owned(),
        })
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `body` to `queue`. When this returns `Ok`, the message is on disk.
    pub async fn publish(&self, queue: &str, body: &[u8]) -> Result<(), QueueError> {
        sqlx::query("INSERT INTO messages (queue, body, available_at) VALUES (?, ?, ?)")
            .bind(queue)
            .bind(body)
            .bind(now_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts one copy of `body` on each of `queues`, all or none (one transaction): the embedded
    /// queue's stand-in for an exchange fanning a message out.
    pub async fn publish_to_each(&self, queues: &[&str], body: &[u8]) -> Result<(), QueueError> {
        let mut transaction = self.pool.begin().await?;
        let now = now_millis();
        for queue in queues {
            sqlx::query("INSERT INTO messages (queue, body, available_at) VALUES (?, ?, ?)")
                .bind(queue)
                .bind(body)
                .bind(now)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Leases the oldest available message of `queue` for `lease`, if there is one. A message
    /// is available when its delay has passed and nobody holds an unexpired lease on it.
    pub async fn lease(&self, queue: &str, lease: Duration) -> Result<Option<Leased>, QueueError> {
        let now = now_millis();
        let token = uuid::Uuid::new_v4().to_string();
        // One statement, so two processes cannot lease the same message.
        let row = sqlx::query(
            "UPDATE messages
                SET lease_token = ?1, lease_until = ?2, deliveries = deliveries + 1
              WHERE id = (SELECT id FROM messages
                           WHERE queue = ?3 AND available_at <= ?4
                             AND (lease_until IS NULL OR lease_until <= ?4)
                           ORDER BY available_at, id LIMIT 1)
          RETURNING id, body, attempt, deliveries",
        )
        .bind(&token)
        .bind(now.saturating_add(millis(lease)))
        .bind(queue)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| Leased::from_row(&row, token, queue)))
    }

    /// Extends a lease by `lease` from now. `false`: the lease was lost (it ran out and another
    /// consumer took the message), so the work should stop.
    pub async fn renew(&self, leased: &Leased, lease: Duration) -> Result<bool, QueueError> {
        let until = now_millis().saturating_add(millis(lease));
        self.settle(
            sqlx::query("UPDATE messages SET lease_until = ? WHERE id = ? AND lease_token = ?")
                .bind(until),
            leased,
        )
        .await
    }

    /// Done with the message: it is removed.
    pub async fn ack(&self, leased: &Leased) -> Result<bool, QueueError> {
        self.settle(
            sqlx::query("DELETE FROM messages WHERE id = ? AND lease_token = ?"),
            leased,
        )
        .await
    }

    /// Not done, through no fault of the message: available again at once.
    pub async fn release(&self, leased: &Leased) -> Result<bool, QueueError> {
        self.settle(
            sqlx::query(
                "UPDATE messages SET lease_token = NULL, lease_until = NULL
                  WHERE id = ? AND lease_token = ?",
            ),
            leased,
        )
        .await
    }

    /// Failed for a passing reason: available again after `delay`, as the next attempt.
    pub async fn retry_later(&self, leased: &Leased, delay: Duration) -> Result<bool, QueueError> {
        let at = now_millis().saturating_add(millis(delay));
        self.settle(
            sqlx::query(
                "UPDATE messages
                    SET lease_token = NULL, lease_until = NULL, deliveries = 0,
                        attempt = attempt + 1, available_at = ?
                  WHERE id = ? AND lease_token = ?",
            )
            .bind(at),
            leased,
        )
        .await
    }

    /// Can never succeed: moved to the queue's dead-letter queue with the reason.
    pub async fn dead_letter(&self, leased: &Leased, reason: &str) -> Result<bool, QueueError> {
        self.settle(
            sqlx::query(
                "UPDATE messages
                    SET lease_token = NULL, lease_until = NULL, queue = ?, reason = ?
                  WHERE id = ? AND lease_token = ?",
            )
            .bind(QueueConfig::dead_letter_queue(&leased.queue))
            .bind(reason),
            leased,
        )
        .await
    }

    /// How many messages `queue` holds (leased and delayed ones included).
    pub async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE queue = ?")
            .bind(queue)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs a statement that changes one leased message, binding its id and lease token last;
    /// `false` when the lease is no longer ours.
    async fn settle(
        &self,
        query: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        leased: &Leased,
    ) -> Result<bool, QueueError> {
        let done = query
            .bind(leased.id)
            .bind(&leased.token)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Leased {
    fn from_row(row: &SqliteRow, token: String, queue: &str) -> Self {
        let count = |column: &str| u32::try_from(row.get::<i64, _>(column)).unwrap_or(u32::MAX);
        Self {
            id: row.get("id"),
            token,
            queue: queue.to_owned(),
            body: row.get("body"),
            attempt: count("attempt").max(1),
            deliveries: count("deliveries"),
        }
    }
}

/// Consumes `worker`'s queue from the file until `shutdown` fires: leases up to the
/// concurrency at once, polling while the queue is empty.
pub(crate) async fn consume<H: Handler>(
    worker: Arc<Worker<H>>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let settings = &worker.settings;
    let path = settings.broker.embedded_queue_path();
    let queue = EmbeddedQueue::open(&path)
        .await
        .with_context(|| format!("opening the embedded queue {}", path.display()))?;
    let lease = settings.broker.embedded_queue_lease();
    tracing::info!(queue = %settings.queue, file = %path.display(), concurrency = settings.concurrency, "consuming the embedded queue");
    readiness.set(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(usize::from(
        settings.concurrency.max(1),
    )));
    let in_flight = TaskTracker::new();
    let cancel = CancellationToken::new();
    let mut pause = BUSY_POLL_PAUSE;
    let mut last_found = tokio::time::Instant::now();
    loop {
        let slot = tokio::select! {
            () = shutdown.wait() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        match queue.lease(&settings.queue, lease).await {
            Ok(Some(leased)) => {
                pause = BUSY_POLL_PAUSE;
                last_found = tokio::time::Instant::now();
                let (queue, worker) = (queue.clone(), worker.clone());
                let cancel = cancel.child_token();
                in_flight.spawn(async move {
                    settle(leased, queue, worker, cancel).await;
                    drop(slot);
                });
                continue;
            }
            Ok(None) if last_found.elapsed() < BUSY_SPELL => pause = BUSY_POLL_PAUSE,
            Ok(None) => pause = (pause * 2).clamp(BUSY_POLL_PAUSE, POLL_INTERVAL),
            Err(error) => {
                tracing::warn!(%error, ?pause, "cannot read the embedded queue; retrying");
                pause = (pause * 2).clamp(POLL_INTERVAL, MAX_ERROR_PAUSE);
            }
        }
        drop(slot);
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    readiness.set(false);
    in_flight.close();
    consumer::drain(&in_flight, &cancel, settings.grace).await;
    Ok(())
}

/// Handles one leased message, renewing its lease meanwhile, and settles it by the outcome.
async fn settle<H: Handler>(
    leased: Leased,
    queue: EmbeddedQueue,
    worker: Arc<Worker<H>>,
    cancel: CancellationToken,
) {
    let lease = worker.settings.broker.embedded_queue_lease();
    // Stops renewing when dropped, so even a handler that panics lets its lease run out and the
    // message go to another worker.
    let renewing = AbortOnDropHandle::new(tokio::spawn(renew_until_done(
        queue.clone(),
        leased.clone(),
        lease,
        cancel.clone(),
    )));
    let settlement = worker
        .handle(Delivery {
            body: &leased.body,
            content_type: None,
            attempt: leased.attempt,
            redelivered: leased.deliveries > 1,
            cancel,
        })
        .await;
    drop(renewing);
    let settled = match settlement {
        Settlement::Ack => queue.ack(&leased).await,
        Settlement::RetryAfter(delay) => queue.retry_later(&leased, delay).await,
        Settlement::DeadLetter(reason) => queue.dead_letter(&leased, &reason).await,
        Settlement::HandBack => queue.release(&leased).await,
    };
    match settled {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the message's lease ran out before it was settled; it will be delivered again"
        ),
        Err(error) => {
            tracing::warn!(%error, "could not settle a message; it will be delivered again when its lease runs out")
        }
    }
}

/// Keeps a lease alive while its work runs; cancels the work when the lease is lost.
async fn renew_until_done(
    queue: EmbeddedQueue,
    leased: Leased,
    lease: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match queue.renew(&leased, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("lost the lease on a message (another worker has it now); stopping");
                cancel.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, "could not renew a lease; trying again"),
        }
    }
}

/// Whether `error` is SQLite's BUSY or LOCKED (another connection holds the lock we need).
fn is_locked(error: &sqlx::Error) -> bool {
    // Extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    error
        .as_database_error()
        .and_then(|database| database.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

fn now_millis() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    /// A queue in `dir` holding one message, `body`, on `video`.
    async fn holding(dir: &tempfile::TempDir, body: &[u8]) -> EmbeddedQueue {
        let queue = queue_in(dir).await;
        queue.publish("video", body).await.unwrap();
        queue
    }

    async fn queue_in(dir: &tempfile::TempDir) -> EmbeddedQueue {
        EmbeddedQueue::open(&dir.path().join(FILE_NAME))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn services_opening_a_new_queue_file_at_the_same_moment_all_get_it() {
        // As `up` does: a gateway and two workers open one file that does not exist yet. Many
        // fresh files, so the race SQLite refuses without waiting is surely met.
        for round in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            let openers = (0..6).map(|_| {
                let path = path.clone();
                tokio::spawn(async move { EmbeddedQueue::open(&path).await })
            });
            for opened in futures::future::join_all(openers).await {
                let queue = opened.unwrap().unwrap_or_else(|error| {
                    panic!("round {round}: {}", service_kit::error::chain(&error))
                });
                queue.publish("video", b"job").await.unwrap();
            }
            let queue = queue_in(&dir).await;
            assert_eq!(queue.depth("video").await.unwrap(), 6);
        }
    }

    #[tokio::test]
    async fn a_published_message_is_leased_once_and_gone_after_its_ack() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"first").await;
        queue.publish("video", b"second").await.unwrap();
        queue.publish("mp3", b"elsewhere").await.unwrap();

        let first = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!((first.body.as_slice(), first.attempt), (&b"first"[..], 1));
        assert_eq!(first.deliveries, 1);
        let second = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!(second.body, b"second");
        assert!(
            queue.lease("video", LEASE).await.unwrap().is_none(),
            "both are leased"
        );

        assert!(queue.ack(&first).await.unwrap());
        assert!(!queue.ack(&first).await.unwrap(), "an ack counts once");
        assert_eq!(queue.depth("video").await.unwrap(), 1);
        assert_eq!(queue.depth("mp3").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn messages_survive_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        queue_in(&dir)
            .await
            .publish("video", b"kept")
            .await
            .unwrap();
        let reopened = queue_in(&dir).await;
        let leased = reopened.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!(leased.body, b"kept");
    }

    #[tokio::test]
    async fn an_expired_lease_is_delivered_again_and_the_old_holder_loses_it() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"job").await;
        let dead_worker = queue
            .lease("video", Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;

        let next = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!((next.body.as_slice(), next.deliveries), (&b"job"[..], 2));
        assert!(!queue.renew(&dead_worker, LEASE).await.unwrap());
        assert!(!queue.ack(&dead_worker).await.unwrap());
        assert!(queue.renew(&next, LEASE).await.unwrap());
        assert!(queue.ack(&next).await.unwrap());
        assert_eq!(queue.depth("video").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_renewed_lease_is_not_delivered_to_anyone_else() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"job").await;
        // Renewed well inside the lease (a slow fsync cannot let it run out in between), and
        // held past it in all.
        let lease = Duration::from_secs(2);
        let held = queue.lease("video", lease).await.unwrap().unwrap();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            assert!(queue.renew(&held, lease).await.unwrap());
            assert!(queue.lease("video", lease).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_released_message_comes_back_at_once_as_a_redelivery() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"job").await;
        let leased = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert!(queue.release(&leased).await.unwrap());
        let again = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!((again.attempt, again.deliveries), (1, 2));
    }

    #[tokio::test]
    async fn a_retry_waits_out_its_delay_and_counts_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"job").await;
        let leased = queue.lease("video", LEASE).await.unwrap().unwrap();
        // Long enough that the check just after cannot find the delay already over.
        let delay = Duration::from_secs(2);
        assert!(queue.retry_later(&leased, delay).await.unwrap());
        assert!(queue.lease("video", LEASE).await.unwrap().is_none());
        tokio::time::sleep(delay + Duration::from_millis(200)).await;
        let retried = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert_eq!((retried.attempt, retried.deliveries), (2, 1));
    }

    #[tokio::test]
    async fn a_dead_lettered_message_moves_to_the_dead_queue() {
        let dir = tempfile::tempdir().unwrap();
        let queue = holding(&dir, b"poison").await;
        let leased = queue.lease("video", LEASE).await.unwrap().unwrap();
        assert!(queue.dead_letter(&leased, "not an event").await.unwrap());
        assert_eq!(queue.depth("video").await.unwrap(), 0);
        let dead = queue.lease("video.dead", LEASE).await.unwrap().unwrap();
        assert_eq!(dead.body, b"poison");
    }

    #[tokio::test]
    async fn competing_handles_on_one_file_never_lease_a_message_twice() {
        let dir = tempfile::tempdir().unwrap();
        // Separate opens stand for separate processes: each has its own connections.
        let publisher = queue_in(&dir).await;
        for n in 0..60u32 {
            publisher.publish("video", &n.to_be_bytes()).await.unwrap();
        }
        let mut workers = Vec::new();
        for _ in 0..3 {
            let queue = queue_in(&dir).await;
            workers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(leased) = queue.lease("video", LEASE).await.unwrap() {
                    got.push(leased.body.clone());
                    assert!(queue.ack(&leased).await.unwrap());
                }
                got
            }));
        }
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.unwrap());
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 60, "every message exactly once");
    }
}
