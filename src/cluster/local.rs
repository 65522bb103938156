//! One instance: in-process locks and an in-process hub.

use std::sync::Arc;

use super::hub::Hub;
use super::locks::Locks;
use super::{Cluster, Guard, Purpose, Subscription};
use crate::upload::model::{Status, UploadId};

#[derive(Default)]
pub struct LocalCluster {
    locks: Arc<Locks>,
    hub: Arc<Hub<Status>>,
}

/// Forgets a hub entry when its last watcher leaves.
pub(super) struct HubLease {
    hub: Arc<Hub<Status>>,
    key: String,
}

impl HubLease {
    pub(super) fn new(hub: Arc<Hub<Status>>, key: String) -> HubLease {
        HubLease { hub, key }
    }
}

impl Drop for HubLease {
    fn drop(&mut self) {
        self.hub.release(&self.key);
    }
}

#[async_trait::async_trait]
impl Cluster for LocalCluster {
    async fn lock(&self, id: UploadId, purpose: Purpose) -> Guard {
        Guard::new(self.locks.acquire(id, purpose).await)
    }

    async fn try_lock(&self, id: UploadId) -> Option<Guard> {
        self.locks.try_acquire(id).map(Guard::new)
    }

    fn stop_all(&self) {
        self.locks.cancel_all();
    }

    fn publish(&self, status: &Status) {
        self.hub.publish(&status.id, status.clone());
    }

    fn close(&self, last: Status) {
        let key = last.id.clone();
        self.hub.close(&key, last);
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

    fn is_watched(&self, id: &str) -> bool {
        self.hub.is_watched(id)
    }
}
