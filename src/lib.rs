//! `resumable`: a resumable file upload service.
//!
//! Layout, with dependencies pointing one way (`http` → `upload` → leaves):
//! - [`config`]: typed settings; every flag is also a `RESUMABLE_*` environment variable.
//! - [`startup`]: [`startup::Application`] binds, migrates, repairs and serves.
//! - [`error`]: the one place where errors become HTTP statuses and JSON.
//! - [`http`]: routes and handlers; parses requests, calls the engine. No SQL, no file I/O.
//! - [`upload`]: the engine, the rules of an upload; no HTTP types.
//! - leaves, each behind a trait so a second implementation can plug in: [`store`] (the
//!   bytes), [`meta`] (the metadata; the only SQL), [`cluster`] (locks and progress
//!   publish/subscribe). They never import each other. [`metrics`] counts for /metrics.
//! - [`hooks`]: the operator's hooks: `pre-*` questions and the durable `post-*` outbox
//!   (its queue is kept by [`meta`]).
//! - [`client`]: the command-line client (`resumable upload | status | watch | download`),
//!   which speaks only HTTP.
//! - [`fault`]: named crash points that tests arm through an environment variable.

pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fault;
pub mod hooks;
pub mod http;
pub mod meta;
pub mod metrics;
pub mod startup;
pub mod store;
pub mod upload;
