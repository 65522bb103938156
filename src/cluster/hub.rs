//! Progress publish/subscribe: one `tokio::sync::watch` per watched upload.
//!
//! A watch channel holds only the latest value, so a slow watcher never builds a backlog.
//! An entry exists only while someone watches; publishing to an unwatched upload is a lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

pub struct Hub<T> {
    channels: Mutex<HashMap<String, watch::Sender<T>>>,
}

impl<T: Clone> Default for Hub<T> {
    fn default() -> Self {
        Hub {
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Hub<T> {
    /// Hands the latest value to every watcher of `key`; drops the entry once nobody watches.
    pub fn publish(&self, key: &str, value: T) {
        let mut channels = self.lock();
        if let Some(sender) = channels.get(key) {
            if sender.receiver_count() == 0 {
                channels.remove(key);
            } else {
                sender.send_replace(value);
            }
        }
    }

    /// Starts watching `key`, seeding a new channel with `current`.
    pub fn subscribe(&self, key: &str, current: T) -> watch::Receiver<T> {
        let mut channels = self.lock();
        match channels.get(key) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(current);
                channels.insert(key.to_owned(), sender);
                receiver
            }
        }
    }

    /// Changes the latest value of a watched `key` in place; `change` says whether it did.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut T) -> bool) {
        if let Some(sender) = self.lock().get(key) {
            sender.send_if_modified(change);
        }
    }

    /// Forgets `key` if nobody watches it any more (called as a watcher leaves).
    pub fn release(&self, key: &str) {
        let mut channels = self.lock();
        if channels.get(key).is_some_and(|s| s.receiver_count() == 0) {
            channels.remove(key);
        }
    }

    /// Ends every watcher of `key` after they have seen `last` (used when an upload goes away).
    pub fn close(&self, key: &str, last: T) {
        if let Some(sender) = self.lock().remove(key) {
            sender.send_replace(last);
        }
    }

    /// Like `close`, with the last value made from the latest one by `change`.
    pub fn close_with(&self, key: &str, change: impl FnOnce(&mut T)) {
        if let Some(sender) = self.lock().remove(key) {
            sender.send_modify(change);
        }
    }

    /// Every key watched now.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether anyone watches `key` now (the append path commits progress more often then).
    pub fn is_watched(&self, key: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<T>>> {
        // A panic while holding this lock leaves the map consistent, so poisoning is ignored.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
