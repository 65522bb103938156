//! Places among the appends streaming now: one cap for all, one per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{Engine, Result, UploadError};

/// A place among the appends streaming now; freed on drop.
pub(super) struct AppendSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

/// Appends streaming now, per client address.
#[derive(Default)]
pub(super) struct ClientSlots(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot {
    slots: Arc<ClientSlots>,
    addr: IpAddr,
}

impl Engine {
    /// A place among the appends streaming now: 503 when all are taken, 429 when this
    /// client already streams its share.
    pub(super) fn append_slot(&self, client: Option<IpAddr>) -> Result<AppendSlot> {
        let permit = self
            .appends
            .clone()
            .try_acquire_owned()
            .map_err(|_| UploadError::TooManyAppends)?;
        let limit = self.settings.max_appends_per_client;
        let client = client
            .map(|addr| {
                self.clients
                    .take(addr, limit)
                    .ok_or(UploadError::TooManyClientAppends { limit })
            })
            .transpose()?;
        Ok(AppendSlot {
            _permit: permit,
            _client: client,
        })
    }
}

impl ClientSlots {
    fn take(self: &Arc<Self>, addr: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(addr).or_default();
        if *count >= limit.max(1) {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            addr,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}
