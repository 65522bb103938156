//! Per-chunk checksums (tus `Upload-Checksum`, RFC 9530 `Content-Digest`) and the whole-file
//! SHA-256 whose state is saved between appends.

use sha1::Sha1;
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// Names as tus spells them (`Upload-Checksum: sha1 …`).
    pub fn from_tus_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
        }
    }
}

/// What the client says one chunk's digest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChecksum {
    pub algorithm: Algorithm,
    pub expected: Vec<u8>,
}

impl ChunkChecksum {
    /// `None` when the digest has the wrong length for its algorithm.
    pub fn new(algorithm: Algorithm, expected: Vec<u8>) -> Option<ChunkChecksum> {
        (expected.len() == algorithm.digest_len()).then_some(ChunkChecksum {
            algorithm,
            expected,
        })
    }

    pub fn hasher(&self) -> ChunkHasher {
        match self.algorithm {
            Algorithm::Sha1 => ChunkHasher::Sha1(Sha1::new()),
            Algorithm::Sha256 => ChunkHasher::Sha256(Sha256::new()),
        }
    }
}

pub enum ChunkHasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

impl ChunkHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ChunkHasher::Sha1(h) => h.update(data),
            ChunkHasher::Sha256(h) => h.update(data),
        }
    }

    pub fn matches(self, expected: &[u8]) -> bool {
        match self {
            ChunkHasher::Sha1(h) => h.finalize().as_slice() == expected,
            ChunkHasher::Sha256(h) => h.finalize().as_slice() == expected,
        }
    }
}

/// The whole-file hasher's state as bytes, saved with `received`.
pub fn save_state(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

/// Rebuilds the hasher from `save_state`'s bytes; `None` if they are not such a state.
pub fn restore_state(bytes: &[u8]) -> Option<Sha256> {
    let array = bytes.try_into().ok()?;
    Sha256::deserialize(array).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_continues_the_same_digest() {
        let mut whole = Sha256::new();
        whole.update(b"hello, resumable world");
        let mut first = Sha256::new();
        first.update(b"hello, res");
        let saved = save_state(&first);
        let mut resumed = restore_state(&saved).expect("restores");
        resumed.update(b"umable world");
        assert_eq!(resumed.finalize(), whole.finalize());
        assert!(restore_state(b"garbage").is_none());
    }

    #[test]
    fn chunk_checksums_check_their_length_and_value() {
        assert!(ChunkChecksum::new(Algorithm::Sha256, vec![0; 20]).is_none());
        let expected = Sha1::digest(b"abc").to_vec();
        let checksum = ChunkChecksum::new(Algorithm::Sha1, expected.clone()).unwrap();
        let mut hasher = checksum.hasher();
        hasher.update(b"ab");
        hasher.update(b"c");
        assert!(hasher.matches(&expected));
        let mut wrong = checksum.hasher();
        wrong.update(b"abd");
        assert!(!wrong.matches(&expected));
    }
}
