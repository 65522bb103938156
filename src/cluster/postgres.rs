//! Many instances over one PostgreSQL: the local locks and hub, joined across processes.
//!
//! - **One append per upload in the cluster.** A holder keeps a session advisory lock on the
//!   upload, taken on this instance's one lock connection (a session holds any number of
//!   them, so 256 appends need one connection, not 256). A newcomer that finds it held sends
//!   a stop notice; the holder's instance cancels it as a newer local request would, the
//!   holder commits and lets go, and its release notice wakes the newcomer. A holder whose
//!   instance died loses its lock with its connection.
//! - **Progress everywhere.** Every publish is also a notice; each instance listens on one
//!   connection and moves its own hub forward, which serves its own watchers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::hub::Hub;
use super::local::HubLease;
use super::locks::{Holder, Locks};
use super::{Cluster, Guard, Held, Purpose, Stop, Subscription};
use crate::meta::unreachable_database;
use crate::upload::model::{State, Status, UploadId};

const PROGRESS: &str = "resumable_progress";
const STOP: &str = "resumable_stop";
const RELEASED: &str = "resumable_released";

/// How long a newcomer waits between tries when no release notice comes (its holder's
/// instance died, or the notice was lost), and how often it repeats its stop notice.
const RETRY: Duration = Duration::from_millis(100);
const ASK_AGAIN: Duration = Duration::from_secs(1);

/// Notices waiting to be sent; past this, progress notices are dropped (a later one carries
/// the news) rather than held without bound while the database is away.
const OUTBOX: usize = 10_000;

pub struct PgCluster {
    /// Tells this instance's notices from the others'.
    instance: String,
    locks: Arc<Locks>,
    hub: Arc<Hub<Status>>,
    session: Arc<Session>,
    outbox: mpsc::Sender<Notice>,
    /// Woken by every release notice, from any instance.
    released: Arc<Notify>,
}

impl PgCluster {
    /// Connects the lock session, the listener and the sender of notices to `url`.
    pub async fn connect(url: &str) -> Result<PgCluster, sqlx::Error> {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let session = Arc::new(Session::connect(url).await?);
        tokio::spawn(session.clone().keep());
        let locks = Arc::new(Locks::default());
        let hub = Arc::new(Hub::default());
        let released = Arc::new(Notify::new());
        let mut listener = PgListener::connect(url).await?;
        listener.listen_all([PROGRESS, STOP, RELEASED]).await?;
        let inbox = Inbox {
            instance: instance.clone(),
            locks: locks.clone(),
            hub: hub.clone(),
            released: released.clone(),
        };
        tokio::spawn(inbox.run(url.to_owned(), listener));
        let (outbox, pending) = mpsc::channel(OUTBOX);
        tokio::spawn(send_notices(url.to_owned(), pending));
        tokio::spawn(refresh_watched(url.to_owned(), hub.clone()));
        info!(instance, "joined the cluster");
        Ok(PgCluster {
            instance,
            locks,
            hub,
            session,
            outbox,
            released,
        })
    }

    fn notify(&self, channel: &'static str, payload: String) {
        self.send(Notice {
            channel,
            payload,
            while_waiting: None,
        });
    }

    fn send(&self, notice: Notice) {
        let channel = notice.channel;
        if self.outbox.try_send(notice).is_err() {
            warn!(channel, "notice dropped: the database is behind or away");
        }
    }

    /// Sent only while `waiting` is not cancelled: a stop notice that is still queued when
    /// its request has got the lock (or given up) would stop whoever holds the upload by the
    /// time it arrives — often that client's next, newer request.
    fn ask_to_stop(&self, id: UploadId, purpose: Purpose, waiting: &CancellationToken) {
        let purpose = match purpose {
            Purpose::Append => "append",
            Purpose::Remove => "remove",
        };
        self.send(Notice {
            channel: STOP,
            payload: format!("{} {id} {purpose}", self.instance),
            while_waiting: Some(waiting.clone()),
        });
    }

    /// Tries the upload's lock once. In a task of its own, which wraps a lock taken at once:
    /// if the caller goes away meanwhile (its request dropped), the lock is let go rather
    /// than left held on the session for ever. `announce`: tell waiters when it is let go
    /// (appends and removals; the sweeps' quick tries need not wake everybody).
    async fn take(&self, id: UploadId, announce: bool) -> Result<Option<SessionLock>, sqlx::Error> {
        let (session, outbox) = (self.session.clone(), self.outbox.clone());
        let taking = tokio::spawn(async move {
            let taken = session.try_lock(id.lock_key()).await?;
            Ok(taken.map(|taken| SessionLock {
                session,
                outbox,
                id,
                generation: taken.generation,
                lost: taken.lost,
                announce,
            }))
        });
        taking
            .await
            .unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(e))))
    }
}

#[async_trait::async_trait]
impl Cluster for PgCluster {
    async fn lock(&self, id: UploadId, purpose: Purpose) -> Guard {
        let holder = self.locks.acquire(id, purpose).await;
        let mut asked: Option<Instant> = None;
        // Cancelled when this call returns, whatever the outcome.
        let waiting = CancellationToken::new();
        let _waiting = waiting.clone().drop_guard();
        loop {
            // A newer request here, a stop notice, or shutdown: an append gives up (the caller
            // finds out why, and never acts without the lock). A removal holds on, as it does
            // on one instance, where it keeps the local lock it has.
            if holder.cancel.is_cancelled() && purpose == Purpose::Append {
                let why = holder.stop_reason().or(Some(Stop::ShuttingDown));
                return Guard::new(PgHeld::new(holder, None, why));
            }
            let released = self.released.notified();
            match self.take(id, true).await {
                Ok(Some(lock)) => return Guard::new(PgHeld::new(holder, Some(lock), None)),
                Ok(None) => {
                    if asked.is_none_or(|at| at.elapsed() >= ASK_AGAIN) {
                        self.ask_to_stop(id, purpose, &waiting);
                        asked = Some(Instant::now());
                    }
                    let cancelled = async {
                        if purpose == Purpose::Append {
                            holder.cancel.cancelled().await
                        } else {
                            std::future::pending().await
                        }
                    };
                    tokio::select! {
                        _ = released => {}
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = cancelled => {}
                    }
                }
                Err(e) => {
                    warn!(upload = %id, error = %e, "cannot take the upload's lock");
                    let why = Some(Stop::Unavailable);
                    return Guard::new(PgHeld::new(holder, None, why));
                }
            }
        }
    }

    async fn try_lock(&self, id: UploadId) -> Option<Guard> {
        let holder = self.locks.try_acquire(id)?;
        let lock = self.take(id, false).await.ok()??;
        Some(Guard::new(PgHeld::new(holder, Some(lock), None)))
    }

    fn stop_all(&self) {
        self.locks.cancel_all();
    }

    fn publish(&self, status: &Status) {
        self.hub.publish(&status.id, status.clone());
        self.notify(PROGRESS, Progress::of(&self.instance, status).encode());
    }

    fn close(&self, last: Status) {
        let notice = Progress::of(&self.instance, &last).encode();
        self.hub.close(&last.id.clone(), last);
        self.notify(PROGRESS, notice);
    }

    fn subscribe(&self, current: &Status) -> Subscription {
        let key = current.id.clone();
        let receiver = self.hub.subscribe(&key, current.clone());
        Subscription {
            receiver,
            _lease: Box::new(HubLease::new(self.hub.clone(), key)),
        }
    }

    fn update(&self, id: &str, change: &mut dyn FnMut(&mut Status) -> bool) {
        self.hub.update(id, change);
    }

    /// Always: a watcher may be on any instance, and this one cannot see the others'. With
    /// the bytes in an object store (which many instances need), a checkpoint is a part, so
    /// this is one commit per part.
    fn is_watched(&self, _id: &str) -> bool {
        true
    }
}

/// The local holder, and the cluster-wide lock once taken.
struct PgHeld {
    holder: Holder,
    _lock: Option<SessionLock>,
    /// Set when the lock could not be taken.
    why: Option<Stop>,
    /// Cancelled with the holder's, or when the lock's connection is lost.
    cancel: CancellationToken,
    lost: CancellationToken,
}

impl PgHeld {
    fn new(holder: Holder, lock: Option<SessionLock>, why: Option<Stop>) -> PgHeld {
        let cancel = holder.cancel.child_token();
        let lost = match &lock {
            Some(lock) => lock.lost.clone(),
            None => CancellationToken::new(),
        };
        if why.is_some() {
            cancel.cancel();
        }
        let (watched, losing) = (cancel.clone(), lost.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = losing.cancelled() => watched.cancel(),
                _ = watched.cancelled() => {}
            }
        });
        PgHeld {
            holder,
            _lock: lock,
            why,
            cancel,
            lost,
        }
    }
}

impl Held for PgHeld {
    fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    fn stop_reason(&self) -> Option<Stop> {
        if self.why.is_some() {
            return self.why;
        }
        // A newer request or shutdown says more than a lost lock.
        let local = self.holder.stop_reason();
        match local {
            Some(_) => local,
            None if self.lost.is_cancelled() => Some(Stop::Unavailable),
            None => None,
        }
    }
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        // Ends the task that links the token to the lock's connection.
        self.cancel.cancel();
    }
}

/// A lock the session took: on which connection, and what tells of that connection's loss.
struct Taken {
    generation: u64,
    lost: CancellationToken,
}

/// An advisory lock held on the lock session; let go (and announced) when dropped.
struct SessionLock {
    session: Arc<Session>,
    outbox: mpsc::Sender<Notice>,
    id: UploadId,
    generation: u64,
    /// Cancelled if the connection the lock lives on is lost.
    lost: CancellationToken,
    /// Whether letting go is announced to waiters.
    announce: bool,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        let (session, outbox) = (self.session.clone(), self.outbox.clone());
        let (id, generation, announce) = (self.id, self.generation, self.announce);
        // Locks on one session stack: a local newcomer that takes it before this unlock runs
        // holds it once more, and keeps it after.
        tokio::spawn(async move {
            session.unlock(id.lock_key(), generation).await;
            if announce {
                let released = Notice {
                    channel: RELEASED,
                    payload: id.to_string(),
                    while_waiting: None,
                };
                let _ = outbox.send(released).await;
            }
        });
    }
}

/// The one connection this instance's advisory locks live on. Its generation moves when it
/// is lost (with every lock on it), so that unlocks meant for the old one are not sent.
struct Session {
    url: String,
    conn: Mutex<Option<PgConnection>>,
    generation: AtomicU64,
    /// Cancelled when the current connection is found lost: its holders lost their locks.
    lost: std::sync::Mutex<CancellationToken>,
}

/// How often the lock connection is checked, so that holders learn soon that their locks
/// are gone (another instance may take the upload then).
const CHECK: Duration = Duration::from_secs(1);

/// How long making the lock connection may take before lock requests answer 503.
const CONNECT: Duration = Duration::from_secs(5);

impl Session {
    async fn connect(url: &str) -> Result<Session, sqlx::Error> {
        Ok(Session {
            url: url.to_owned(),
            conn: Mutex::new(Some(PgConnection::connect(url).await?)),
            generation: AtomicU64::new(0),
            lost: std::sync::Mutex::new(CancellationToken::new()),
        })
    }

    /// Checks the connection every `CHECK` while the process runs; one that does not answer
    /// within `CHECK` (a half-open connection) counts as lost, so that nobody waits on it.
    async fn keep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CHECK).await;
            let mut conn = self.conn.lock().await;
            if let Some(live) = conn.as_mut() {
                let ping = sqlx::query("SELECT 1").execute(live);
                match tokio::time::timeout(CHECK, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        warn!(error = %e, "lost the lock connection");
                        self.lose(&mut conn);
                    }
                    Err(_) => {
                        warn!("the lock connection stopped answering");
                        self.lose(&mut conn);
                    }
                }
            }
        }
    }

    /// A new lock connection, or an error within `CONNECT` (the caller holds the mutex).
    async fn reconnect(&self) -> Result<PgConnection, sqlx::Error> {
        match tokio::time::timeout(CONNECT, PgConnection::connect(&self.url)).await {
            Ok(made) => made,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// What a lock taken now is tied to: cancelled if this connection is lost.
    fn lost_token(&self) -> CancellationToken {
        lock_ignoring_poison(&self.lost).clone()
    }

    /// Takes the lock if free, on the connection of that generation.
    async fn try_lock(&self, key: i64) -> Result<Option<Taken>, sqlx::Error> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.reconnect().await?);
        }
        let Some(live) = conn.as_mut() else {
            return Ok(None);
        };
        let taken = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(live)
            .await;
        match taken {
            Ok(taken) => Ok(taken.then(|| Taken {
                generation: self.generation.load(Ordering::SeqCst),
                lost: self.lost_token(),
            })),
            Err(e) => {
                // Only a connection that is gone takes its locks with it; a refused statement
                // (the lock table full, say) leaves the others' locks alone.
                if unreachable_database(&e) {
                    self.lose(&mut conn);
                }
                Err(e)
            }
        }
    }

    async fn unlock(&self, key: i64, generation: u64) {
        let mut conn = self.conn.lock().await;
        if generation != self.generation.load(Ordering::SeqCst) {
            return;
        }
        let Some(live) = conn.as_mut() else {
            return;
        };
        let done = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(live)
            .await;
        if let Err(e) = done {
            warn!(error = %e, "unlocking failed");
            if unreachable_database(&e) {
                self.lose(&mut conn);
            }
        }
    }

    /// Forgets a broken connection; its locks went with it, so their holders are told.
    fn lose(&self, conn: &mut Option<PgConnection>) {
        *conn = None;
        self.generation.fetch_add(1, Ordering::SeqCst);
        let lost = std::mem::take(&mut *lock_ignoring_poison(&self.lost));
        lost.cancel();
    }
}

/// What a progress notice carries: enough to move a watcher's status forward.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    from: String,
    id: String,
    received: u64,
    state: State,
    size: Option<u64>,
    /// Unix milliseconds.
    updated: u64,
    expires: Option<u64>,
    sha256: Option<String>,
    removed: Option<String>,
}

impl Progress {
    fn of(instance: &str, status: &Status) -> Progress {
        Progress {
            from: instance.to_owned(),
            id: status.id.clone(),
            received: status.received,
            state: status.state,
            size: status.size,
            updated: millis(status.updated_at),
            expires: status.expires_at.map(millis),
            sha256: status.sha256.clone(),
            removed: status.removed.clone(),
        }
    }

    /// The stored state of a watched upload, as if a notice had brought it.
    fn from_row(row: &sqlx::postgres::PgRow) -> Option<Progress> {
        let number = |column: &str| -> Option<u64> {
            u64::try_from(row.try_get::<i64, _>(column).ok()?).ok()
        };
        let maybe = |column: &str| -> Option<u64> {
            u64::try_from(row.try_get::<Option<i64>, _>(column).ok()??).ok()
        };
        let state = State::parse(&row.try_get::<String, _>("state").ok()?)?;
        let (received, size) = (number("received")?, maybe("size"));
        // As `Status::of` shows it: an upload whose bytes are all in does not expire.
        let all_in = state == State::Uploading && size == Some(received);
        Some(Progress {
            from: String::new(),
            id: row.try_get("id").ok()?,
            received,
            state,
            size,
            updated: number("updated_at")?,
            expires: maybe("expires_at").filter(|_| !all_in),
            sha256: row.try_get("sha256").ok()?,
            removed: row.try_get("removed_reason").ok()?,
        })
    }

    fn encode(&self) -> String {
        // Only numbers, an id, a state and a digest: well under NOTIFY's 8,000 bytes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Anyone who can reach the database can send a notice: one with an id that is not an
    /// upload's, or times no status can print (past year 9999), is dropped, not shown.
    fn is_sane(&self) -> bool {
        const LAST_MILLISECOND_OF_9999: u64 = 253_402_300_799_999;
        self.id.parse::<UploadId>().is_ok()
            && self.updated <= LAST_MILLISECOND_OF_9999
            && self.expires.is_none_or(|ms| ms <= LAST_MILLISECOND_OF_9999)
    }

    /// Moves the watchers of the upload here forward to this notice (or ends them, if it
    /// says the upload was removed).
    fn announce(&self, hub: &Hub<Status>) {
        match &self.removed {
            Some(reason) => hub.close_with(&self.id, |current| {
                self.apply(current);
                current.removed = Some(reason.clone());
            }),
            None => hub.update(&self.id, |current| self.apply(current)),
        }
    }

    /// Moves `current` forward to this notice, never back; whether it changed.
    fn apply(&self, current: &mut Status) -> bool {
        let newer = self.received > current.received
            || (current.state == State::Uploading && self.state != State::Uploading)
            || (current.size.is_none() && self.size.is_some());
        if newer {
            current.received = self.received;
            current.state = self.state;
            current.size = self.size;
            current.updated_at = UNIX_EPOCH + Duration::from_millis(self.updated);
            current.expires_at = self
                .expires
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            current.sha256.clone_from(&self.sha256);
        }
        newer
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Notices from every instance, applied here.
struct Inbox {
    instance: String,
    locks: Arc<Locks>,
    hub: Arc<Hub<Status>>,
    released: Arc<Notify>,
}

impl Inbox {
    /// Listens until the process ends, listening again whenever the connection is lost.
    async fn run(self, url: String, mut listener: PgListener) {
        loop {
            match listener.try_recv().await {
                Ok(Some(notice)) => self.handle(notice.channel(), notice.payload()),
                Ok(None) => {
                    warn!("lost the notice connection; listening again");
                    listener = self.listen_again(&url).await;
                }
                Err(e) => {
                    warn!(error = %e, "lost the notice connection; listening again");
                    listener = self.listen_again(&url).await;
                }
            }
        }
    }

    /// A new listener, once the database answers again (tried every second), with every
    /// upload watched here brought up to date: notices sent meanwhile were missed, and the
    /// one missed may have been the last (a watcher would wait for it for ever).
    async fn listen_again(&self, url: &str) -> PgListener {
        loop {
            match self.resynced(url).await {
                Ok(listener) => {
                    info!("listening for notices again");
                    return listener;
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for notices yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn resynced(&self, url: &str) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen_all([PROGRESS, STOP, RELEASED]).await?;
        refresh(&self.hub, &mut listener).await?;
        // Whoever waited for a release may have missed it too.
        self.released.notify_waiters();
        Ok(listener)
    }

    fn handle(&self, channel: &str, payload: &str) {
        match channel {
            PROGRESS => self.progress(payload),
            STOP => self.stop(payload),
            RELEASED => self.released.notify_waiters(),
            _ => {}
        }
    }

    fn progress(&self, payload: &str) {
        let Ok(progress) = serde_json::from_str::<Progress>(payload) else {
            return;
        };
        if progress.from != self.instance && progress.is_sane() {
            progress.announce(&self.hub);
        }
    }

    /// `<instance> <id> <append|remove>`: a request on another instance wants the upload.
    fn stop(&self, payload: &str) {
        let mut words = payload.split(' ');
        let (Some(from), Some(id), Some(purpose)) = (words.next(), words.next(), words.next())
        else {
            return;
        };
        let (Ok(id), false) = (id.parse::<UploadId>(), from == self.instance) else {
            return;
        };
        let purpose = match purpose {
            "remove" => Purpose::Remove,
            _ => Purpose::Append,
        };
        self.locks.interrupt(id, purpose);
    }
}

/// One notice to send.
struct Notice {
    channel: &'static str,
    payload: String,
    /// Dropped unsent once this is cancelled.
    while_waiting: Option<CancellationToken>,
}

/// Sends notices in the order they were made, on a connection of their own (made again
/// when lost; a notice that fails twice is dropped: a later one carries the news).
async fn send_notices(url: String, mut pending: mpsc::Receiver<Notice>) {
    let mut conn: Option<PgConnection> = None;
    while let Some(notice) = pending.recv().await {
        let Notice {
            channel,
            payload,
            while_waiting,
        } = notice;
        if while_waiting.is_some_and(|waiting| waiting.is_cancelled()) {
            continue;
        }
        for _ in 0..2 {
            if conn.is_none() {
                conn = PgConnection::connect(&url).await.ok();
            }
            let Some(live) = conn.as_mut() else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let sent = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(&payload)
                .execute(live)
                .await;
            match sent {
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "sending a notice failed");
                    conn = None;
                }
            }
        }
    }
}

fn lock_ignoring_poison<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Brings every upload watched here up to date from the database, as if each had sent a notice.
async fn refresh<'c, E>(hub: &Hub<Status>, executor: E) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    let watched = hub.keys();
    if watched.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT id, received, state, size, updated_at, expires_at, sha256, removed_reason \
         FROM uploads WHERE id = ANY($1)",
    )
    .bind(&watched)
    .fetch_all(executor)
    .await?;
    for row in &rows {
        if let Some(progress) = Progress::from_row(row).filter(Progress::is_sane) {
            progress.announce(hub);
        }
    }
    Ok(())
}

/// How often watched uploads are read again: a safety net for a notice that never came (its
/// instance died between its commit and the notice), not the way progress travels.
const REFRESH: Duration = Duration::from_secs(5);

/// Reads the watched uploads again every `REFRESH`, on a connection of its own.
async fn refresh_watched(url: String, hub: Arc<Hub<Status>>) {
    let mut conn: Option<PgConnection> = None;
    loop {
        tokio::time::sleep(REFRESH).await;
        if hub.keys().is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = PgConnection::connect(&url).await.ok();
        }
        if let Some(live) = conn.as_mut() {
            if let Err(e) = refresh(&hub, live).await {
                warn!(error = %e, "reading watched uploads again failed");
                conn = None;
            }
        }
    }
}
