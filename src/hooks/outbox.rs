//! Drains the queue of `post-*` events: each upload's events one at a time and in order,
//! different uploads in parallel (at most `CONCURRENCY` deliveries at once), failures retried
//! with backoff until --hooks-retry-for has passed since the event was queued.
//!
//! Any instance may deliver any event: an event is claimed by moving its next-attempt time
//! past the delivery's timeout (a lease), so two instances never send it at once, and one
//! that died mid-delivery only delays it until the lease runs out.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{deliver, Hooks, QueuedEvent};
use crate::meta::Meta;

/// Deliveries in flight at most.
const CONCURRENCY: usize = 16;
/// How often the queue is looked at when nothing wakes the outbox sooner.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two tries of one event.
const BACKOFF_AT_MOST: Duration = Duration::from_secs(60);

/// Runs until the task is dropped.
pub async fn run_outbox(hooks: Arc<Hooks>, meta: Arc<dyn Meta>) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    loop {
        let free = permits.available_permits();
        if free > 0 {
            if let Err(e) = hand_out(&hooks, &meta, &permits, free).await {
                warn!(error = %e, "reading the hook event queue failed");
            }
        }
        record_oldest(&hooks, &meta).await;
        tokio::select! {
            () = hooks.queued.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Claims up to `free` due events (each the oldest of its upload) and starts their delivery.
async fn hand_out(
    hooks: &Arc<Hooks>,
    meta: &Arc<dyn Meta>,
    permits: &Arc<Semaphore>,
    free: usize,
) -> crate::meta::Result<()> {
    let now = SystemTime::now();
    let limit = u32::try_from(free).unwrap_or(u32::MAX);
    let lease = now + hooks.settings.timeout + Duration::from_secs(30);
    for event in meta.due_events(now, limit).await? {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            break;
        };
        if !meta.claim_event(event.seq, event.due_at, lease).await? {
            continue; // another instance took it
        }
        let (hooks, meta) = (hooks.clone(), meta.clone());
        tokio::spawn(async move {
            deliver_one(&hooks, meta.as_ref(), event).await;
            drop(permit);
            // The upload's next event may be due now.
            hooks.queued.notify_one();
        });
    }
    Ok(())
}

async fn deliver_one(hooks: &Hooks, meta: &dyn Meta, event: QueuedEvent) {
    let kind = event.kind;
    let sent = deliver::send(hooks, kind, &event.body).await;
    let recorded = match sent {
        Ok(_) => {
            hooks.metrics.hooks.count(kind.index(), "delivered");
            meta.event_done(event.seq).await
        }
        Err(e) => {
            let age = SystemTime::now()
                .duration_since(event.created_at)
                .unwrap_or_default();
            if age >= hooks.settings.retry_for {
                hooks.metrics.hooks.count(kind.index(), "failed");
                warn!(event = kind.as_str(), upload = %event.upload_id, error = %e, attempts = event.attempts + 1, "hook event given up after --hooks-retry-for");
                meta.event_done(event.seq).await
            } else {
                hooks.metrics.hooks.count(kind.index(), "retried");
                let wait = backoff(event.attempts);
                if event.attempts == 0 {
                    warn!(event = kind.as_str(), upload = %event.upload_id, error = %e, "hook event delivery failed; retrying");
                } else {
                    debug!(event = kind.as_str(), upload = %event.upload_id, error = %e, ?wait, "hook event delivery failed again");
                }
                let at = SystemTime::now() + wait;
                meta.event_retry(event.seq, at, &e.to_string()).await
            }
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the event is sent again: at least once, as promised.
        warn!(upload = %event.upload_id, error = %e, "recording a hook delivery failed");
    }
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
