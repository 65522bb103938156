//! New uploads: described ones, streamed ones (a form's file part, whose size is learnt at
//! its end), and uploads a client finds again by a key of its own.

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::append::{restore_hasher, sha256_verdict};
use super::events::rejected;
use super::input::{validate_name, without_bidi};
use super::model::Concat;
use super::pipeline::End;
use super::{checksum, Engine, NewUpload, Result, State, Status, Upload, UploadError, UploadId};
use crate::cluster::{Guard, Purpose};
use crate::hooks::EventKind;
use crate::metrics::Metrics;

/// A streamed upload whose bytes are in, still locked until [`Engine::finish_streamed`].
pub struct Streamed {
    id: UploadId,
    _guard: Guard,
    upload: Upload,
}

impl Streamed {
    pub fn id(&self) -> UploadId {
        self.id
    }
}

impl Engine {
    pub async fn create(&self, new: NewUpload) -> Result<Status> {
        let concat = match new.partial {
            true => Concat::Partial { whole: None },
            false => Concat::Whole,
        };
        Ok(Status::of(&self.create_upload(new, concat, true).await?))
    }

    /// A new upload, after `pre-create` accepted it. With `announce`, `post-create` is queued
    /// with its record; a streamed create announces itself once its bytes are in (until then
    /// it may still be discarded, and nobody knows its id).
    pub(super) async fn create_upload(
        &self,
        mut new: NewUpload,
        concat: Concat,
        announce: bool,
    ) -> Result<Upload> {
        new.name = without_bidi(&new.name);
        validate_name(&new.name).map_err(UploadError::InvalidName)?;
        self.check_space().await?;
        if new.size.is_some_and(|size| size > self.size_limit()) {
            return Err(UploadError::TooLarge {
                limit: self.size_limit(),
                received: None,
            });
        }
        let now = SystemTime::now();
        let mut upload = Upload {
            id: UploadId::new_random(),
            name: new.name,
            size: new.size,
            received: 0,
            state: State::Uploading,
            content_type: new.content_type,
            expected_sha256: new.expected_sha256,
            sha256: None,
            hash_state: Some(checksum::save_state(&Sha256::new())),
            store_state: None,
            metadata: new.metadata,
            failure: None,
            created_at: now,
            updated_at: now,
            expires_at: Some(self.expiry_from(now)),
            removed_at: None,
            concat,
        };
        let id = upload.id;
        self.ask_pre_create(&mut upload).await?;
        // An empty upload is announced with its completion, once it surely exists: its
        // creation may still fail whole below.
        let announced_now = announce && upload.size != Some(0);
        let events = match announced_now {
            true => self.post_event(EventKind::PostCreate, &Status::of(&upload)),
            false => Vec::new(),
        };
        // The record first: a crash before the bytes' place exists leaves a record that
        // start-up repairs, never bytes nobody knows about.
        self.meta.insert(&upload, &events).await?;
        self.set_unannounced(upload.id, !announce);
        if let Err(e) = self.store.create(&id.to_string()).await {
            self.meta.purge(id).await?;
            return Err(e.into());
        }
        Metrics::add(&self.metrics.created, 1);
        self.announce(&events);
        if upload.size == Some(0) {
            // Nobody has this id yet: if the store cannot make the empty file now, the create
            // fails whole (the client retries) rather than leave an upload the sweep would
            // complete for nobody.
            let rejection = match self.seal(&mut upload, Sha256::new(), now).await {
                Ok(rejection) => rejection,
                Err(e) => {
                    let _ = self.store.remove(&id.to_string(), None).await;
                    self.meta.purge(id).await?;
                    return Err(e);
                }
            };
            let mut events = Vec::new();
            if announce {
                let created = Status::of(&upload);
                events.extend(self.post_event(EventKind::PostCreate, &created));
                if upload.state == State::Complete {
                    events.extend(self.post_event(EventKind::PostFinish, &created));
                }
            }
            self.meta.save_progress(&upload, &events).await?;
            self.announce(&events);
            self.count_finished(&upload);
            if let Some(rejection) = rejection {
                return Err(rejected(rejection, Some(0)));
            }
        }
        info!(upload = %id, size = ?upload.size, "created");
        Ok(upload)
    }

    /// Creates an upload from a stream of unknown length (a multipart file part). The upload
    /// stays locked, `uploading` with its size deferred, until `finish_streamed` settles it
    /// (the form's later fields may still name it or give its digest).
    pub async fn create_streamed<S, E>(
        &self,
        new: NewUpload,
        body: S,
        client: Option<std::net::IpAddr>,
    ) -> Result<Streamed>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let _slot = self.append_slot(client)?;
        let id = self
            .create_upload(NewUpload { size: None, ..new }, Concat::Whole, false)
            .await?
            .id;
        let guard = self.cluster.lock(id, Purpose::Append).await;
        match self.stream_all(&guard, id, body).await {
            Ok(upload) => Ok(Streamed {
                id,
                _guard: guard,
                upload,
            }),
            Err(e) => {
                drop(guard);
                self.discard(id).await;
                Err(e)
            }
        }
    }

    /// Pumps a whole body of unknown length into a new upload and commits it.
    async fn stream_all<S, E>(&self, guard: &Guard, id: UploadId, body: S) -> Result<Upload>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    {
        let mut upload = self.load_live(id, Some(guard)).await?;
        let pumped = self
            .pump(guard, &mut upload, body, self.size_limit(), None)
            .await?;
        let end = pumped.end;
        self.commit(&mut upload, pumped, false).await?;
        match end {
            End::Finished => Ok(upload),
            End::Overshoot => Err(UploadError::TooLarge {
                limit: self.size_limit(),
                received: None,
            }),
            End::Disconnected | End::Cancelled | End::Idle | End::TooSlow => {
                Err(UploadError::BodyIncomplete)
            }
        }
    }

    /// Settles a streamed upload: its size becomes what arrived, and its digest is checked.
    pub async fn finish_streamed(
        &self,
        streamed: Streamed,
        name: Option<String>,
        expected_sha256: Option<String>,
    ) -> Result<Status> {
        let Streamed {
            _guard: _held,
            mut upload,
            ..
        } = streamed;
        if let Some(name) = name.map(|n| without_bidi(&n)) {
            validate_name(&name).map_err(UploadError::InvalidName)?;
            if name != upload.name {
                upload.name = name;
                // The hook vetted the part's file name; the name it will be known by is this
                // one. Not announced yet, so a refusal still creates nothing.
                self.ask_pre_create(&mut upload).await?;
            }
        }
        if expected_sha256.is_some() {
            upload.expected_sha256 = expected_sha256;
        }
        let hasher = restore_hasher(&upload)?;
        upload.size = Some(upload.received);
        upload.updated_at = SystemTime::now();
        let now = upload.updated_at;
        // Announced now that it exists for good, before whatever the seal makes of it.
        self.set_unannounced(upload.id, false);
        let created = self.post_event(EventKind::PostCreate, &Status::of(&upload));
        let rejection = self.seal(&mut upload, hasher, now).await?;
        let mut events = created;
        if upload.state == State::Complete {
            events.extend(self.post_event(EventKind::PostFinish, &Status::of(&upload)));
        }
        self.meta.save_progress(&upload, &events).await?;
        self.announce(&events);
        self.count_finished(&upload);
        let status = Status::of(&upload);
        self.cluster.publish(&status);
        if let Some(rejection) = rejection {
            return Err(rejected(rejection, Some(upload.received)));
        }
        sha256_verdict(&upload, status)
    }

    /// Forgets an upload whose creation failed: no record, no bytes left behind.
    pub async fn discard(&self, id: UploadId) {
        self.set_unannounced(id, false);
        let removed = self.store.remove(&id.to_string(), None).await;
        let purged = self.meta.purge(id).await;
        let outcome = removed
            .map_err(UploadError::from)
            .and_then(|()| purged.map_err(UploadError::from));
        if let Err(e) = outcome {
            warn!(upload = %id, error = %e, "discarding a failed upload");
        }
    }

    /// The live upload a client's own key for a file maps to, if any.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<Status>> {
        let Some(id) = self.meta.key_upload(key).await? else {
            return Ok(None);
        };
        match self.status(id).await {
            Ok(status) => Ok(Some(status)),
            Err(UploadError::NotFound | UploadError::Gone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The live upload for a client's key, created as `new` when the key maps to none.
    pub async fn create_for_key(&self, key: &str, new: NewUpload) -> Result<Status> {
        // One read decides: a live mapping (another first request won meanwhile) is used; a
        // dead one may be replaced, but only if it is still the one read here.
        let stale = self.meta.key_upload(key).await?;
        if let Some(mapped) = stale {
            match self.status(mapped).await {
                Ok(live) => return Ok(live),
                Err(UploadError::NotFound | UploadError::Gone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let ours = self.create_upload(new, Concat::Whole, true).await?;
        if self.meta.map_key(key, ours.id, stale).await? {
            return Ok(Status::of(&ours));
        }
        // Another first request for this key mapped it first: use its upload, not ours.
        self.discard(ours.id).await;
        self.find_by_key(key).await?.ok_or(UploadError::NotFound)
    }
}
