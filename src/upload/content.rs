//! Reading a complete upload back (downloads).

use super::{Engine, Result, State, Status, UploadError, UploadId};
use crate::store::{ByteStream, Source};

/// A complete upload opened for reading: its status and its bytes, which stay readable
/// even if the upload is removed while they are read.
pub struct Content {
    pub status: Status,
    source: Box<dyn Source>,
}

impl Content {
    /// How many bytes are stored.
    pub fn len(&self) -> u64 {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `count` bytes from `start`.
    pub async fn stream(self, start: u64, count: u64) -> Result<ByteStream> {
        Ok(self.source.stream(start, count).await?)
    }
}

impl Engine {
    /// A complete upload's status and bytes, for download.
    pub async fn content(&self, id: UploadId) -> Result<Content> {
        let upload = self.load_live(id, None).await?;
        if matches!(upload.concat, super::model::Concat::Partial { .. }) {
            return Err(UploadError::PartialContent);
        }
        if upload.state != State::Complete {
            return Err(UploadError::NotComplete {
                received: upload.received,
            });
        }
        let source = match self.store.open_read(&id.to_string()).await {
            Ok(source) => source,
            // Deleted between the record's read and the open: what a later request would say.
            Err(e) if e.is_not_found() => return Err(UploadError::Gone("deleted or expired")),
            Err(e) => return Err(e.into()),
        };
        Ok(Content {
            status: Status::of(&upload),
            source,
        })
    }
}
