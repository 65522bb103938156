//! Drains the queue of `post-*` events: each upload's events one at a time and in order,
//! different uploads in parallel (at most `CONCURRENCY` deliveries at once), failures retried
//! with backoff until --hooks-retry-for has passed since the event was queued.
//!
//! Any instance may deliver any event: an event is claimed by moving its next-attempt time
//! past the delivery's timeout (a lease), so two instances never send it at once, and one
//! that died mid-delivery (or before it recorded a delivery) only delays it until the lease
//! runs out, and sends it again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{deliver, lock, Hooks, QueuedEvent};
use crate::meta::Meta;

/// Deliveries in flight at most.
const CONCURRENCY: usize = 16;
/// How often the queue is looked at when nothing wakes the outbox sooner.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two tries of one event.
const BACKOFF_AT_MOST: Duration = Duration::from_secs(60);

/// Runs until the task is dropped.
pub async fn run_outbox(hooks: Arc<Hooks>, meta: Arc<dyn Meta>) {
    let outbox = Outbox {
        hooks,
        meta,
        permits: Arc::new(Semaphore::new(CONCURRENCY)),
        delivered: Arc::default(),
    };
    let mut oldest_read = None::<Instant>;
    loop {
        // Batched: one statement forgets what was delivered since the last turn, one claims
        // what is due. Per event, each was an SQLite commit (an fsync) beside the uploads'.
        outbox.forget_delivered().await;
        if let Err(e) = outbox.hand_out().await {
            warn!(error = %e, "reading the hook event queue failed");
        }
        if oldest_read.is_none_or(|at| at.elapsed() >= POLL) {
            record_oldest(&outbox.hooks, &outbox.meta).await;
            oldest_read = Some(Instant::now());
        }
        tokio::select! {
            () = outbox.hooks.queued.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

struct Outbox {
    hooks: Arc<Hooks>,
    meta: Arc<dyn Meta>,
    permits: Arc<Semaphore>,
    /// Delivered (or given up) events still in the queue, forgotten at the next turn: until
    /// then their upload's next event waits, so the order holds.
    delivered: Arc<Mutex<Vec<i64>>>,
}

impl Outbox {
    async fn forget_delivered(&self) {
        let seqs = std::mem::take(&mut *lock(&self.delivered));
        if let Err(e) = self.meta.events_done(&seqs).await {
            // Their leases run out and they are sent again: at least once, as promised.
            warn!(error = %e, events = seqs.len(), "recording hook deliveries failed");
        }
    }

    /// Claims due events (each the oldest of its upload) and starts their delivery.
    async fn hand_out(&self) -> crate::meta::Result<()> {
        let free = self.permits.available_permits();
        if free == 0 {
            return Ok(());
        }
        let now = SystemTime::now();
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let due = self.meta.due_events(now, limit).await?;
        let seqs: Vec<i64> = due.iter().map(|event| event.seq).collect();
        let lease = now + self.hooks.settings.timeout + Duration::from_secs(30);
        let claimed = self.meta.claim_events(&seqs, now, lease).await?;
        for event in due.into_iter().filter(|e| claimed.contains(&e.seq)) {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break; // unreachable: no more were fetched than permits were free
            };
            let (hooks, meta) = (self.hooks.clone(), self.meta.clone());
            let delivered = self.delivered.clone();
            tokio::spawn(async move {
                if deliver_one(&hooks, meta.as_ref(), &event).await {
                    lock(&delivered).push(event.seq);
                }
                drop(permit);
                // The upload's next event may be due now.
                hooks.queued.notify_one();
            });
        }
        Ok(())
    }
}

/// Sends one event; true once it is done with (delivered, or given up after
/// --hooks-retry-for), false when it waits for another try.
async fn deliver_one(hooks: &Hooks, meta: &dyn Meta, event: &QueuedEvent) -> bool {
    let kind = event.kind;
    let Err(e) = deliver::send(hooks, kind, &event.body).await else {
        hooks.metrics.hooks.count(kind.index(), "delivered");
        return true;
    };
    let age = SystemTime::now()
        .duration_since(event.created_at)
        .unwrap_or_default();
    if age >= hooks.settings.retry_for {
        hooks.metrics.hooks.count(kind.index(), "failed");
        warn!(event = kind.as_str(), upload = %event.upload_id, error = %e, attempts = event.attempts + 1, "hook event given up after --hooks-retry-for");
        return true;
    }
    hooks.metrics.hooks.count(kind.index(), "retried");
    let wait = backoff(event.attempts);
    if event.attempts == 0 {
        warn!(event = kind.as_str(), upload = %event.upload_id, error = %e, "hook event delivery failed; retrying");
    } else {
        debug!(event = kind.as_str(), upload = %event.upload_id, error = %e, ?wait, "hook event delivery failed again");
    }
    let at = SystemTime::now() + wait;
    if let Err(e) = meta.event_retry(event.seq, at, &e.to_string()).await {
        // Its lease runs out instead, and it is tried again then.
        warn!(upload = %event.upload_id, error = %e, "recording a failed hook delivery failed");
    }
    false
}

/// 1 s after the first failure, doubling, at most a minute.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(BACKOFF_AT_MOST)
}

async fn record_oldest(hooks: &Hooks, meta: &Arc<dyn Meta>) {
    let oldest = match meta.oldest_event().await {
        Ok(oldest) => oldest,
        Err(e) => {
            debug!(error = %e, "reading the hook queue's oldest event failed");
            return;
        }
    };
    let millis = oldest.map_or(-1, |at| {
        let since = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let age = since(SystemTime::now()).saturating_sub(since(at));
        i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
    });
    hooks.metrics.hooks.set_oldest_millis(millis);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
