//! One append at a time per upload, where the newest request wins.
//!
//! A client that lost its connection resumes with a new PATCH while the server may still be
//! waiting on the dead one. So a newcomer does not queue behind the holder: it cancels the
//! holder's token, the holder commits what it stored and lets go, and the newcomer proceeds.
//! Every acquirer gets a fresh token and cancels the previous newest one, so among several
//! waiting requests only the latest survives. The newest acquirer's purpose is kept, so a
//! stopped append can tell its client whether it was replaced or its upload removed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::{Held, Purpose, Stop};
use crate::upload::model::UploadId;

#[derive(Default)]
struct Newest {
    ticket: u64,
    purpose: Purpose,
    token: Option<CancellationToken>,
}

#[derive(Default)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The newest acquirer (holding or waiting).
    newest: Mutex<Newest>,
}

impl Entry {
    /// Registers a new acquirer: cancels the previous newest one, returns the new ticket.
    fn register(&self, token: &CancellationToken, purpose: Purpose) -> u64 {
        let mut newest = lock_ignoring_poison(&self.newest);
        newest.ticket += 1;
        newest.purpose = purpose;
        if let Some(previous) = newest.token.replace(token.clone()) {
            previous.cancel();
        }
        newest.ticket
    }
}

#[derive(Default)]
pub struct Locks {
    entries: Mutex<HashMap<UploadId, Arc<Entry>>>,
    /// Set at shutdown: every acquirer from then on finds its token cancelled.
    stopping: AtomicBool,
}

/// Held while appending, deleting or expiring one upload.
pub struct Holder {
    locks: Arc<Locks>,
    id: UploadId,
    entry: Option<Arc<Entry>>,
    ticket: u64,
    _held: Option<OwnedMutexGuard<()>>,
    /// Cancelled when a newer request for the same upload arrives, or at shutdown.
    pub cancel: CancellationToken,
}

impl Locks {
    /// Takes the upload's lock, asking any current holder (and older waiters) to stop.
    pub async fn acquire(self: &Arc<Self>, id: UploadId, purpose: Purpose) -> Holder {
        let (entry, ticket, token) = {
            let mut entries = self.map();
            // Under the map lock, so shutdown cannot slip between the token and its registration.
            let token = self.new_token();
            let entry = entries.entry(id).or_default().clone();
            let ticket = entry.register(&token, purpose);
            (entry, ticket, token)
        };
        let held = entry.lock.clone().lock_owned().await;
        self.holder(id, entry, ticket, held, token)
    }

    /// Takes the lock only if nobody holds or awaits it (for the expiry sweep).
    pub fn try_acquire(self: &Arc<Self>, id: UploadId) -> Option<Holder> {
        let mut entries = self.map();
        if entries.contains_key(&id) {
            return None;
        }
        let entry: Arc<Entry> = Arc::default();
        let held = entry.lock.clone().try_lock_owned().ok()?;
        let token = self.new_token();
        let ticket = entry.register(&token, Purpose::Remove);
        entries.insert(id, entry.clone());
        Some(self.holder(id, entry, ticket, held, token))
    }

    fn holder(
        self: &Arc<Self>,
        id: UploadId,
        entry: Arc<Entry>,
        ticket: u64,
        held: OwnedMutexGuard<()>,
        cancel: CancellationToken,
    ) -> Holder {
        Holder {
            locks: self.clone(),
            id,
            entry: Some(entry),
            ticket,
            _held: Some(held),
            cancel,
        }
    }

    /// Asks every holder to stop (graceful shutdown: commit what you have and answer).
    pub fn cancel_all(&self) {
        let entries = self.map();
        self.stopping.store(true, Ordering::SeqCst);
        for entry in entries.values() {
            if let Some(token) = lock_ignoring_poison(&entry.newest).token.as_ref() {
                token.cancel();
            }
        }
    }

    /// Asks the holder (and waiters) of `id` here to stop for a request elsewhere (another
    /// instance): as if a newer acquirer with `purpose` had registered. No-op if nobody here
    /// holds or awaits it.
    pub fn interrupt(&self, id: UploadId, purpose: Purpose) {
        if let Some(entry) = self.map().get(&id) {
            let elsewhere = CancellationToken::new();
            elsewhere.cancel();
            entry.register(&elsewhere, purpose);
        }
    }

    fn new_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        if self.stopping.load(Ordering::SeqCst) {
            token.cancel();
        }
        token
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Arc<Entry>>> {
        lock_ignoring_poison(&self.entries)
    }
}

impl Held for Holder {
    fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    fn stop_reason(&self) -> Option<Stop> {
        if !self.cancel.is_cancelled() {
            return None;
        }
        let newest = self
            .entry
            .as_ref()
            .map(|entry| {
                let newest = lock_ignoring_poison(&entry.newest);
                (newest.ticket, newest.purpose)
            })
            .filter(|(ticket, _)| *ticket != self.ticket);
        Some(match newest {
            None => Stop::ShuttingDown,
            Some((_, Purpose::Append)) => Stop::Superseded,
            Some((_, Purpose::Remove)) => Stop::Removed,
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Release the mutex first, then forget the entry if nobody else refers to it. Clones of
        // an entry are only made under the map lock, so the count cannot grow meanwhile.
        self._held.take();
        let Some(entry) = self.entry.take() else {
            return;
        };
        let mut entries = self.locks.map();
        if Arc::strong_count(&entry) == 2 {
            entries.remove(&self.id);
        }
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_newcomer_cancels_the_holder_and_gets_the_lock() {
        let locks = Arc::new(Locks::default());
        let id = UploadId::new_random();
        let first = locks.acquire(id, Purpose::Append).await;
        assert!(!first.cancel.is_cancelled());
        assert_eq!(first.stop_reason(), None);
        let waiter = spawn_append(&locks, id);
        tokio::time::timeout(Duration::from_secs(1), first.cancel.cancelled())
            .await
            .expect("the holder is asked to stop");
        assert_eq!(first.stop_reason(), Some(Stop::Superseded));
        drop(first);
        assert!(
            !waiter.await.unwrap(),
            "the newest acquirer is not cancelled"
        );
        assert!(
            locks.map().is_empty(),
            "entries go away with their last user"
        );
    }

    #[tokio::test]
    async fn only_the_newest_waiter_survives() {
        let locks = Arc::new(Locks::default());
        let id = UploadId::new_random();
        let holder = locks.acquire(id, Purpose::Append).await;
        let older = spawn_append(&locks, id);
        registered(&locks, id, 2).await;
        let newer = spawn_append(&locks, id);
        registered(&locks, id, 3).await;
        drop(holder);
        assert!(
            older.await.unwrap(),
            "a superseded waiter finds its token cancelled"
        );
        assert!(!newer.await.unwrap());
    }

    /// An append acquiring the lock in the background; yields whether it was told to stop.
    fn spawn_append(locks: &Arc<Locks>, id: UploadId) -> tokio::task::JoinHandle<bool> {
        let locks = locks.clone();
        tokio::spawn(async move {
            locks
                .acquire(id, Purpose::Append)
                .await
                .cancel
                .is_cancelled()
        })
    }

    /// Waits until `count` acquirers have registered for `id` (they wait for the mutex then).
    async fn registered(locks: &Locks, id: UploadId, count: u64) {
        let ticket = || {
            locks
                .map()
                .get(&id)
                .map_or(0, |entry| lock_ignoring_poison(&entry.newest).ticket)
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while ticket() < count {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the acquirers register");
    }

    #[tokio::test]
    async fn cancel_all_stops_holders_without_superseding_them() {
        let locks = Arc::new(Locks::default());
        let held = locks.acquire(UploadId::new_random(), Purpose::Append).await;
        locks.cancel_all();
        assert!(held.cancel.is_cancelled());
        assert_eq!(held.stop_reason(), Some(Stop::ShuttingDown));
    }

    #[tokio::test]
    async fn after_shutdown_began_every_acquirer_is_told_to_stop() {
        let locks = Arc::new(Locks::default());
        locks.cancel_all();
        let late = locks.acquire(UploadId::new_random(), Purpose::Append).await;
        assert_eq!(late.stop_reason(), Some(Stop::ShuttingDown));
    }

    #[tokio::test]
    async fn a_holder_learns_that_its_upload_is_being_removed() {
        let locks = Arc::new(Locks::default());
        let id = UploadId::new_random();
        let held = locks.acquire(id, Purpose::Append).await;
        assert_eq!(held.stop_reason(), None);
        let remover = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(id, Purpose::Remove).await.stop_reason() })
        };
        tokio::time::timeout(Duration::from_secs(1), held.cancel.cancelled())
            .await
            .expect("the holder is asked to stop");
        assert_eq!(held.stop_reason(), Some(Stop::Removed));
        drop(held);
        assert_eq!(remover.await.unwrap(), None);
    }

    #[tokio::test]
    async fn try_acquire_fails_while_held() {
        let locks = Arc::new(Locks::default());
        let id = UploadId::new_random();
        let held = locks.acquire(id, Purpose::Append).await;
        assert!(locks.try_acquire(id).is_none());
        assert!(!held.cancel.is_cancelled(), "try_acquire never cancels");
        drop(held);
        assert!(locks.try_acquire(id).is_some());
    }
}
