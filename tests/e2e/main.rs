//! Black-box tests: each starts the real server (port 0, temporary data directory) and talks
//! HTTP, WebSocket and SSE to it, as API.md describes.

mod append;
mod backup;
mod browser_safety;
mod cli;
mod cluster;
mod content;
mod crash;
mod create;
mod create_rate;
mod defaults;
mod forgetful;
mod form_answer;
mod garage;
mod hooks;
mod hostile;
mod hostile_clients;
mod integrity;
mod limits;
mod log_levels;
mod metrics;
mod nginx;
mod openapi;
mod postgres;
mod power_cut;
mod receiver;
mod resilience;
mod s3;
mod sealing;
mod slow_bodies;
mod support;
mod watch;
