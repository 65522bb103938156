//! Who may append to an upload now, and who must hear of its progress.
//!
//! One instance needs only in-process locks and a publish/subscribe hub ([`LocalCluster`]).
//! Many instances over one PostgreSQL need the same two things across processes: advisory
//! locks, and notifications that feed each instance's hub ([`PgCluster`]). Both implement one
//! trait, so the engine never knows which it has.

mod hub;
mod local;
mod locks;
mod postgres;

use tokio_util::sync::CancellationToken;

use crate::upload::model::{Status, UploadId};

pub use local::LocalCluster;
pub use postgres::PgCluster;

/// Why a request takes an upload's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    #[default]
    Append,
    Remove,
}

/// Why a holder was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A newer append for the same upload arrived.
    Superseded,
    /// The upload is being deleted or expired.
    Removed,
    /// The server is shutting down.
    ShuttingDown,
    /// The lock could not be taken or kept: the database that holds it is unreachable.
    Unavailable,
}

#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Takes the upload's lock, asking any current holder (and older waiters) to stop: the
    /// newest request wins, and the holder commits what it stored before letting go.
    async fn lock(&self, id: UploadId, purpose: Purpose) -> Guard;

    /// Takes the lock only if nobody holds or awaits it (for the expiry sweep).
    async fn try_lock(&self, id: UploadId) -> Option<Guard>;

    /// Asks every holder to stop, now and from now on (graceful shutdown).
    fn stop_all(&self);

    /// Tells every watcher of the upload its new status.
    fn publish(&self, status: &Status);

    /// Ends every watcher of the upload after they have seen `last` (it was removed).
    fn close(&self, last: Status);

    /// Starts watching the upload, seeding its channel with `current` if nobody watched.
    fn subscribe(&self, current: &Status) -> Subscription;

    /// Moves a watched upload's latest status forward where `change` says it is newer.
    fn update(&self, id: &str, change: &mut dyn FnMut(&mut Status) -> bool);

    /// Whether anyone watches the upload now (appends commit progress more often then).
    fn is_watched(&self, id: &str) -> bool;
}

/// Held while appending to, deleting or expiring one upload; dropping it lets go.
pub struct Guard {
    held: Box<dyn Held>,
}

/// What a cluster keeps for a holder until it lets go.
pub trait Held: Send + Sync {
    /// Cancelled when a newer request for the same upload arrives, or at shutdown.
    fn cancel(&self) -> &CancellationToken;
    /// Why the holder was asked to stop, if it was.
    fn stop_reason(&self) -> Option<Stop>;
}

impl Guard {
    pub fn new(held: impl Held + 'static) -> Guard {
        Guard {
            held: Box::new(held),
        }
    }

    pub fn cancel(&self) -> &CancellationToken {
        self.held.cancel()
    }

    pub fn stop_reason(&self) -> Option<Stop> {
        self.held.stop_reason()
    }
}

/// One watcher's view of an upload's status; the upload is forgotten by the hub when its
/// last watcher leaves.
pub struct Subscription {
    // Fields drop in order: the receiver goes before the lease checks for other receivers.
    receiver: tokio::sync::watch::Receiver<Status>,
    _lease: Box<dyn Send + Sync>,
}

impl Subscription {
    /// The latest status, marking it seen.
    pub fn latest(&mut self) -> Status {
        self.receiver.borrow_and_update().clone()
    }

    /// Waits for a newer status. `false` once no more can come (the upload was removed).
    pub async fn changed(&mut self) -> bool {
        self.receiver.changed().await.is_ok()
    }
}
