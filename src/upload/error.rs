//! The engine's one error type. `error.rs` at the crate root maps it to HTTP.

use crate::hooks::HookError;
use crate::meta::MetaError;
use crate::store::StoreError;

use super::model::Status;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no upload has this id")]
    NotFound,
    #[error("this upload was {0}")]
    Gone(&'static str),
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    #[error("the upload would exceed the largest size allowed ({limit} bytes)")]
    TooLarge { limit: u64, received: Option<u64> },
    #[error("Upload-Offset is {given}, but the upload has received {received} bytes")]
    OffsetMismatch { given: u64, received: u64 },
    #[error("the upload is {state}; it takes no more bytes")]
    NotUploading { state: &'static str, received: u64 },
    #[error("the upload's length is {size}; it cannot change to {given}")]
    LengthMismatch {
        size: u64,
        given: u64,
        received: u64,
    },
    #[error("the upload's length {given} is less than the {received} bytes already received")]
    LengthBelowReceived { given: u64, received: u64 },
    #[error("the chunk's checksum did not match; it was discarded")]
    ChecksumMismatch { received: u64 },
    #[error("the body ended before the whole chunk arrived, so its checksum cannot be verified; it was discarded")]
    ChecksumIncomplete { received: u64 },
    #[error("the file's SHA-256 is {actual}, not the declared {expected}")]
    Sha256Mismatch {
        expected: String,
        actual: String,
        status: Box<Status>,
    },
    #[error("the body ended before it was complete")]
    BodyIncomplete,
    #[error("the upload is not complete yet")]
    NotComplete { received: u64 },
    #[error("a newer request for this upload took over; what this one stored is kept")]
    Superseded { received: u64 },
    #[error("the server is shutting down; what this request stored is kept")]
    ShuttingDown { received: u64 },
    #[error("the body sent nothing for too long; what arrived is kept")]
    IdleTimeout { received: u64 },
    #[error("the disk has {free} bytes free, less than the {min} kept in reserve")]
    DiskFull { free: u64, min: u64 },
    #[error("the disk has {free} free inodes, less than the {min} kept in reserve")]
    NoInodes { free: u64, min: u64 },
    #[error("too many uploads are streaming now; retry shortly")]
    TooManyAppends,
    #[error("this client already streams {limit} appends at once; retry when one ends")]
    TooManyClientAppends { limit: usize },
    #[error("the body arrived more slowly than the server accepts; what arrived is kept")]
    TooSlow { received: u64 },
    #[error("the database that coordinates the instances cannot be reached; what this request stored is kept")]
    Unavailable { received: u64 },
    #[error("invalid concatenation: {0}")]
    InvalidConcat(&'static str),
    #[error("upload {0} was not created as a part (tus: Upload-Concat: partial)")]
    NotPartial(String),
    #[error("a part named is already part of another upload")]
    PartTaken,
    #[error("this upload is assembled from its parts; append to them instead")]
    FinalUpload,
    #[error("this upload is a part of another upload; download that one")]
    PartialContent,
    #[error("the parts cannot make this upload: {0}")]
    PartsUnreadable(String),
    #[error("{message}")]
    Rejected {
        status: u16,
        message: String,
        received: Option<u64>,
    },
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] MetaError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl UploadError {
    /// The store, the database or the lock behind it cannot be reached now: worth a retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UploadError::Unavailable { .. } => true,
            UploadError::Storage(e) => e.is_unavailable(),
            UploadError::Db(e) => e.is_unavailable(),
            _ => false,
        }
    }

    /// The byte count a client resumes from, where the error knows it.
    pub fn received(&self) -> Option<u64> {
        match self {
            UploadError::TooLarge { received, .. } | UploadError::Rejected { received, .. } => {
                *received
            }
            UploadError::OffsetMismatch { received, .. }
            | UploadError::NotUploading { received, .. }
            | UploadError::LengthMismatch { received, .. }
            | UploadError::LengthBelowReceived { received, .. }
            | UploadError::ChecksumMismatch { received }
            | UploadError::ChecksumIncomplete { received }
            | UploadError::NotComplete { received }
            | UploadError::Superseded { received }
            | UploadError::ShuttingDown { received }
            | UploadError::Unavailable { received }
            | UploadError::IdleTimeout { received }
            | UploadError::TooSlow { received } => Some(*received),
            UploadError::Sha256Mismatch { status, .. } => Some(status.received),
            _ => None,
        }
    }
}
