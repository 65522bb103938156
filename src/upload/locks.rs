//! One append at a time per upload, where the newest request wins.
//!
//! A client that lost its connection resumes with a new PATCH while the server may still be
//! waiting on the dead one. So a newcomer does not queue behind the holder: it cancels the
//! holder's token, the holder commits what it stored and lets go, and the newcomer proceeds.
//! Every acquirer gets a fresh token and cancels the previous newest one, so among several
//! waiting requests only the latest survives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::model::UploadId;

#[derive(Default)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The ticket and token of the newest acquirer (holding or waiting).
    newest: Mutex<(u64, Option<CancellationToken>)>,
}

impl Entry {
    /// Registers a new acquirer: cancels the previous newest one, returns the new ticket.
    fn register(&self, token: &CancellationToken) -> u64 {
        let mut newest = lock_ignoring_poison(&self.newest);
        newest.0 += 1;
        if let Some(previous) = newest.1.replace(token.clone()) {
            previous.cancel();
        }
        newest.0
    }
}

#[derive(Default)]
pub struct Locks {
    entries: Mutex<HashMap<UploadId, Arc<Entry>>>,
}

/// Held while appending, deleting or expiring one upload.
pub struct Guard {
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
    pub async fn acquire(self: &Arc<Self>, id: UploadId) -> Guard {
        let token = CancellationToken::new();
        let (entry, ticket) = {
            let mut entries = self.map();
            let entry = entries.entry(id).or_default().clone();
            let ticket = entry.register(&token);
            (entry, ticket)
        };
        let held = entry.lock.clone().lock_owned().await;
        Guard {
            locks: self.clone(),
            id,
            entry: Some(entry),
            ticket,
            _held: Some(held),
            cancel: token,
        }
    }

    /// Takes the lock only if nobody holds or awaits it (for the expiry sweep).
    pub fn try_acquire(self: &Arc<Self>, id: UploadId) -> Option<Guard> {
        let mut entries = self.map();
        if entries.contains_key(&id) {
            return None;
        }
        let entry: Arc<Entry> = Arc::default();
        let held = entry.lock.clone().try_lock_owned().ok()?;
        let token = CancellationToken::new();
        let ticket = entry.register(&token);
        entries.insert(id, entry.clone());
        Some(Guard {
            locks: self.clone(),
            id,
            entry: Some(entry),
            ticket,
            _held: Some(held),
            cancel: token,
        })
    }

    /// Asks every holder to stop (graceful shutdown: commit what you have and answer).
    pub fn cancel_all(&self) {
        for entry in self.map().values() {
            if let Some(token) = lock_ignoring_poison(&entry.newest).1.as_ref() {
                token.cancel();
            }
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Arc<Entry>>> {
        lock_ignoring_poison(&self.entries)
    }
}

impl Guard {
    /// True when a newer request for the same upload has arrived since this one.
    pub fn superseded(&self) -> bool {
        self.entry
            .as_ref()
            .is_some_and(|entry| lock_ignoring_poison(&entry.newest).0 != self.ticket)
    }
}

impl Drop for Guard {
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
        let first = locks.acquire(id).await;
        assert!(!first.cancel.is_cancelled());
        assert!(!first.superseded());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(id).await.cancel.is_cancelled() })
        };
        tokio::time::timeout(Duration::from_secs(1), first.cancel.cancelled())
            .await
            .expect("the holder is asked to stop");
        assert!(first.superseded());
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
        let holder = locks.acquire(id).await;
        let older = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(id).await.cancel.is_cancelled() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let newer = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.acquire(id).await.cancel.is_cancelled() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(holder);
        assert!(
            older.await.unwrap(),
            "a superseded waiter finds its token cancelled"
        );
        assert!(!newer.await.unwrap());
    }

    #[tokio::test]
    async fn cancel_all_stops_holders_without_superseding_them() {
        let locks = Arc::new(Locks::default());
        let held = locks.acquire(UploadId::new_random()).await;
        locks.cancel_all();
        assert!(held.cancel.is_cancelled());
        assert!(!held.superseded());
    }

    #[tokio::test]
    async fn try_acquire_fails_while_held() {
        let locks = Arc::new(Locks::default());
        let id = UploadId::new_random();
        let held = locks.acquire(id).await;
        assert!(locks.try_acquire(id).is_none());
        assert!(!held.cancel.is_cancelled(), "try_acquire never cancels");
        drop(held);
        assert!(locks.try_acquire(id).is_some());
    }
}
