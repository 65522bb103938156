//! Uploads assembled from parts (tus' concatenation extension; the native API's parts):
//! parts are appended in parallel like any upload, and a final upload names them in order.
//! Once every part is complete the final's bytes are written once, hashed once, and the
//! parts are removed.
//!
//! Until then the final shows what its parts hold: `received` their sum, `size` their sum
//! once every size is known. It waits for them without expiring on its own, but a part that
//! goes (deleted, expired) takes the final with it: it could never complete.

use std::collections::HashSet;
use std::time::SystemTime;

use tracing::{info, warn};

use super::events::{failed, rejected};
use super::{Engine, NewUpload, Result, State, Status, Upload, UploadError, UploadId};
use crate::cluster::Purpose;
use crate::hooks::Rejection;
use crate::meta::MetaError;

pub use super::model::Concat;

/// How long parts stay once their final holds their bytes, at most.
const PARTS_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most parts one upload is made of: each is read for every status shown while the
/// final waits, and clients split a file in a handful.
const MAX_PARTS: usize = 1000;

impl Engine {
    /// Creates the upload made of `parts`, in order. Parts may still be uploading; it is
    /// assembled as soon as the last one completes (here, if they all already have).
    /// Naming the same parts again answers the final that already claimed them: a client
    /// whose answer was lost may ask twice.
    pub async fn create_final(&self, new: NewUpload, parts: Vec<UploadId>) -> Result<Status> {
        let loaded = match self.claimable_parts(&parts).await? {
            Claimable::Free(loaded) => loaded,
            Claimable::Claimed(existing) => return self.status(existing).await,
        };
        let size = loaded.iter().map(|p| p.size).sum::<Option<u64>>();
        if size.is_some_and(|size| size > self.size_limit()) {
            return Err(UploadError::TooLarge {
                limit: self.size_limit(),
                received: None,
            });
        }
        let new = NewUpload { size, ..new };
        let concat = Concat::Final {
            parts: parts.clone(),
        };
        let upload = match self.create_upload(new, concat, true).await {
            // Another final claimed a part meanwhile: the very same request, sent twice at
            // once, is answered with the final it made.
            Err(UploadError::Db(MetaError::Stale)) => match self.claimable_parts(&parts).await? {
                Claimable::Claimed(existing) => return self.status(existing).await,
                Claimable::Free(_) => return Err(UploadError::PartTaken),
            },
            other => other?,
        };
        info!(upload = %upload.id, parts = loaded.len(), "final upload created");
        let (status, rejection) = match self.assemble(upload.id).await {
            Ok(assembled) => assembled,
            // Created: the sweep assembles it once the store (or the hook) is back.
            Err(e) => {
                warn!(upload = %upload.id, error = %e, "assembling a final upload failed; retried by the sweep");
                (self.status(upload.id).await?, None)
            }
        };
        if let Some(rejection) = rejection {
            return Err(rejected(rejection, None));
        }
        match status.failure.as_deref() {
            Some("sha256_mismatch") => Err(sha256_mismatch(&status)),
            // Created, and failed for a reason of its parts: the status says which.
            _ => Ok(status),
        }
    }

    /// The parts a new final names, each a live part: unknown is 404, removed 410, a whole
    /// upload 400, one claimed by another final 409 (unless all name this very list).
    async fn claimable_parts(&self, parts: &[UploadId]) -> Result<Claimable> {
        if parts.is_empty() {
            return Err(UploadError::InvalidConcat("name at least one part"));
        }
        if parts.len() > MAX_PARTS {
            return Err(UploadError::InvalidConcat(
                "an upload is made of at most 1000 parts",
            ));
        }
        let mut seen = HashSet::new();
        if !parts.iter().all(|id| seen.insert(*id)) {
            return Err(UploadError::InvalidConcat("a part is named twice"));
        }
        let mut loaded = Vec::with_capacity(parts.len());
        let mut gone = false;
        for id in parts {
            let part = match self.meta.get(*id).await? {
                // Gone into a final already: asking for that final again is answered below.
                Some(part) if part.removed_at.is_some() && claimed(&part) => {
                    gone = true;
                    part
                }
                _ => self.load_live(*id, None).await?,
            };
            if !matches!(part.concat, Concat::Partial { .. }) {
                return Err(UploadError::NotPartial(id.to_string()));
            }
            loaded.push(part);
        }
        let claimed = loaded
            .iter()
            .any(|p| !matches!(p.concat, Concat::Partial { whole: None }));
        if !claimed {
            return Ok(Claimable::Free(loaded));
        }
        let whole = match one_claimant(&loaded) {
            Some(whole) => self.meta.get(whole).await?,
            None => None,
        };
        match whole {
            Some(whole)
                if whole.concat
                    == (Concat::Final {
                        parts: parts.to_vec(),
                    }) =>
            {
                Ok(Claimable::Claimed(whole.id))
            }
            _ if gone => Err(UploadError::Gone(
                "deleted: a part is part of another upload",
            )),
            _ => Err(UploadError::PartTaken),
        }
    }

    /// Assembles the final upload `id` if every part is complete; else leaves it waiting.
    /// Returns its status, and `Some` when a `pre-finish` hook refused it.
    pub(super) async fn assemble(&self, id: UploadId) -> Result<(Status, Option<Rejection>)> {
        let guard = self.cluster.lock(id, Purpose::Append).await;
        if guard.stop_reason().is_some() {
            return Ok((self.status(id).await?, None));
        }
        let mut upload = self.load_live(id, Some(&guard)).await?;
        let rejection = self.assemble_locked(&mut upload).await?;
        drop(guard);
        Ok((self.present(&upload).await?, rejection))
    }

    /// `assemble`, under the final's lock. A part gone meanwhile removes the final.
    pub(super) async fn assemble_locked(&self, upload: &mut Upload) -> Result<Option<Rejection>> {
        let Concat::Final { parts } = upload.concat.clone() else {
            return Ok(None);
        };
        if upload.state != State::Uploading || upload.removed_at.is_some() {
            return Ok(None);
        }
        if upload.is_all_in() {
            // Written and committed by an earlier try that could not seal it.
            let rejection = self.seal_all_in(upload).await?;
            self.let_parts_go(&parts).await;
            return Ok(rejection);
        }
        let Some(loaded) = self.parts_if_complete(upload, &parts).await? else {
            return Ok(None);
        };
        let total: u64 = loaded.iter().map(|p| p.received).sum();
        if total > self.size_limit() {
            // Parts of deferred lengths that add up past the limit: it can never be made.
            return self.fail_final(upload, "too_large", &parts).await;
        }
        let written = {
            let _turn = self.assemblies.acquire().await;
            self.write_whole(upload, &loaded, total).await
        };
        let (hasher, store_state) = match written {
            Ok(written) => written,
            // Parts whose bytes are not what their records say never will be: trying again
            // every hour would only read them again.
            Err(UploadError::PartsUnreadable(why)) => {
                warn!(upload = %upload.id, %why, "a final upload cannot be made from its parts");
                return self.fail_final(upload, "parts_unreadable", &parts).await;
            }
            Err(e) => {
                // The parts are intact: the sweep tries again (`settle_final`).
                self.mark_due(upload).await;
                return Err(e);
            }
        };
        let now = SystemTime::now();
        upload.size = Some(total);
        upload.received = total;
        upload.store_state = store_state;
        upload.updated_at = now;
        let rejection = self.seal_durably(upload, hasher, now).await?;
        self.save(upload).await?;
        self.count_finished(upload);
        self.cluster.publish(&Status::of(upload));
        info!(upload = %upload.id, size = total, "final upload assembled");
        self.let_parts_go(&parts).await;
        Ok(rejection)
    }

    /// A final that can never be made: failed (it expires as failed uploads do), and its
    /// parts go as after an assembly.
    async fn fail_final(
        &self,
        upload: &mut Upload,
        why: &str,
        parts: &[UploadId],
    ) -> Result<Option<Rejection>> {
        let now = SystemTime::now();
        failed(upload, why, self.expiry_from(now));
        upload.updated_at = now;
        self.save(upload).await?;
        self.count_finished(upload);
        self.cluster.publish(&Status::of(upload));
        self.let_parts_go(parts).await;
        Ok(None)
    }

    /// The parts, once every one is complete; `None` while some still receive bytes. A part
    /// gone removes the final (it can never complete) and answers 410.
    async fn parts_if_complete(
        &self,
        upload: &Upload,
        parts: &[UploadId],
    ) -> Result<Option<Vec<Upload>>> {
        let mut loaded = Vec::with_capacity(parts.len());
        for id in parts {
            let part = self.meta.get(*id).await?;
            match part {
                Some(part) if part.removed_at.is_none() => loaded.push(part),
                _ => {
                    self.remove(upload, "deleted").await?;
                    self.remove_related(upload, "deleted").await;
                    return Err(UploadError::Gone("deleted: one of its parts is gone"));
                }
            }
        }
        let complete = loaded.iter().all(|p| p.state == State::Complete);
        Ok(complete.then_some(loaded))
    }

    /// Once the final holds their bytes (or is failed), the parts stay a while for a client
    /// that asks after them again (tus-js-client, retrying a final whose answer it lost,
    /// looks at its parts first), then the sweep removes them (`expire_part`).
    async fn let_parts_go(&self, parts: &[UploadId]) {
        let grace = self.settings.expire_after.min(PARTS_KEPT);
        let at = SystemTime::now() + grace;
        if let Err(e) = self.meta.set_expiry(parts, at).await {
            warn!(error = %e, "dating the parts of a final upload failed; the sweep removes them later");
        }
    }

    /// The sweep's call on a part whose date came. A part of a final still waiting for other
    /// parts stays (a complete one) or goes with its final (one abandoned mid-way); a part
    /// whose final is done, failed or gone goes. True if it removed something.
    pub(super) async fn expire_part(&self, part: &Upload, whole: UploadId) -> Result<bool> {
        let waiting = match self.meta.get(whole).await? {
            Some(f) => f.removed_at.is_none() && f.state == State::Uploading,
            None => false,
        };
        let now = SystemTime::now();
        if waiting && part.state == State::Complete {
            self.meta
                .set_expiry(&[part.id], self.expiry_from(now))
                .await?;
            return Ok(false);
        }
        let due = part.expires_at.is_some_and(|at| at <= now) && !part.is_all_in();
        if due || !waiting {
            let reason = if part.state == State::Complete {
                "concatenated"
            } else {
                "expired"
            };
            self.remove(part, reason).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// What the sweep does with a final upload that came due: assemble it if its parts are
    /// all in; else keep it waiting as long as a part may still receive bytes.
    pub(super) async fn settle_final(&self, upload: &mut Upload) -> Result<bool> {
        match self.assemble_locked(upload).await {
            Ok(_) => {}
            Err(UploadError::Gone(_)) => return Ok(true),
            Err(e) => {
                warn!(upload = %upload.id, error = %e, "assembling a final upload failed");
                return Ok(false);
            }
        }
        if upload.state == State::Uploading && upload.expires_at.is_some() {
            let now = SystemTime::now();
            upload.expires_at = Some(self.expiry_from(now));
            self.save(upload).await?;
        }
        Ok(true)
    }

    /// Called when an upload is removed: its final (if not assembled yet) and, for a final,
    /// its parts go with it (and a waiting final's other parts with that final).
    pub(super) async fn remove_related(&self, upload: &Upload, reason: &str) {
        let related: Vec<UploadId> = match &upload.concat {
            Concat::Whole | Concat::Partial { whole: None } => return,
            Concat::Partial { whole: Some(whole) } => vec![*whole],
            Concat::Final { parts } => parts.clone(),
        };
        for id in related {
            let parts = match self.remove_tied(id, reason).await {
                Ok(Some(Upload {
                    concat: Concat::Final { parts },
                    ..
                })) => parts,
                Ok(_) => continue,
                Err(e) => {
                    warn!(upload = %id, error = %e, "removing an upload tied to a removed one failed");
                    continue;
                }
            };
            for part in parts.into_iter().filter(|p| *p != upload.id) {
                if let Err(e) = self.remove_tied(part, reason).await {
                    warn!(upload = %part, error = %e, "removing a part of a removed final failed");
                }
            }
        }
    }

    /// Removes `id` under its lock if it is still live, unless it is an assembled final (it
    /// keeps its own bytes). Returns what it removed.
    async fn remove_tied(&self, id: UploadId, reason: &str) -> Result<Option<Upload>> {
        let _guard = self.cluster.lock(id, Purpose::Remove).await;
        let Some(upload) = self.meta.get(id).await? else {
            return Ok(None);
        };
        let assembled =
            matches!(upload.concat, Concat::Final { .. }) && upload.state != State::Uploading;
        if upload.removed_at.is_some() || assembled {
            return Ok(None);
        }
        self.remove(&upload, reason).await?;
        Ok(Some(upload))
    }

    /// The status an upload shows: a final not assembled yet shows its parts' progress.
    pub(super) async fn present(&self, upload: &Upload) -> Result<Status> {
        let mut status = Status::of(upload);
        let waiting = matches!(upload.concat, Concat::Final { .. })
            && upload.state == State::Uploading
            && !upload.is_all_in();
        if !waiting {
            return Ok(status);
        }
        let (received, size) = self.meta.parts_sum(upload.id).await?;
        status.received = received;
        status.size = status.size.or(size);
        Ok(status)
    }

    /// A part's progress moved: its final's watchers see the new sum. `completed` when the
    /// part just completed, which may make its final ready to assemble.
    pub(super) async fn part_moved(&self, part: &Upload, completed: bool) {
        if !matches!(part.concat, Concat::Partial { .. }) {
            return;
        }
        // Read again: a final may have claimed the part while it was being appended to.
        let whole = match self.meta.get(part.id).await {
            Ok(Some(Upload {
                concat: Concat::Partial { whole: Some(whole) },
                ..
            })) => whole,
            _ => return,
        };
        if completed {
            match self.assemble(whole).await {
                // Assembled, it was published as it completed; else it waits on other parts.
                Ok((status, _)) if status.state == State::Uploading => {
                    self.cluster.publish(&status)
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(upload = %whole, error = %e, "assembling a final upload failed; retried by the sweep")
                }
            }
            return;
        }
        // Progress of a final nobody watches is read when asked for.
        if !self.cluster.is_watched(&whole.to_string()) {
            return;
        }
        if let Ok(Some(final_upload)) = self.meta.get(whole).await {
            if let Ok(status) = self.present(&final_upload).await {
                self.cluster.publish(&status);
            }
        }
    }
}

/// The parts a new final names: free to claim, or all claimed already by one final with
/// this very list.
enum Claimable {
    Free(Vec<Upload>),
    Claimed(UploadId),
}

fn claimed(part: &Upload) -> bool {
    matches!(part.concat, Concat::Partial { whole: Some(_) })
}

/// The one final that claimed every part in `loaded`, if one did.
fn one_claimant(loaded: &[Upload]) -> Option<UploadId> {
    let mut wholes = loaded.iter().map(|p| match p.concat {
        Concat::Partial { whole } => whole,
        _ => None,
    });
    let first = wholes.next()??;
    wholes.all(|w| w == Some(first)).then_some(first)
}

fn sha256_mismatch(status: &Status) -> UploadError {
    UploadError::Sha256Mismatch {
        expected: status.expected_sha256.clone().unwrap_or_default(),
        actual: status.sha256.clone().unwrap_or_default(),
        status: Box::new(status.clone()),
    }
}
