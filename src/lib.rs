//! `resumable`: a resumable file upload service.
//!
//! Layout, with dependencies pointing one way (`http` → `upload` → leaves):
//! - [`config`]: typed settings; every flag is also a `RESUMABLE_*` environment variable.
//! - [`startup`]: [`startup::Application`] binds, migrates, repairs and serves.
//! - [`error`]: the one place where errors become HTTP statuses and JSON.
//! - [`http`]: routes and handlers; parses requests, calls the engine. No SQL, no file I/O.
//! - [`upload`]: the engine, the rules of an upload; no HTTP types.
//! - leaves: [`storage`] (the bytes), [`db`] (the metadata, the only SQL), [`hub`]
//!   (progress publish/subscribe), [`metrics`] (counters for /metrics). They never import
//!   each other.
//! - [`fault`]: named crash points that tests arm through an environment variable.

pub mod config;
pub mod db;
pub mod error;
pub mod fault;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod startup;
pub mod storage;
pub mod upload;
