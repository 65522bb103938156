//! Other protocols on the same resource: tus 1.0.0 (with the real tus-js-client), the IETF
//! draft, CORS for cross-origin browser clients, and the tutorial's protocol.

#[path = "../e2e/support.rs"]
mod support;

mod draft;
mod tus;
mod tus_js;
mod tutorial;
