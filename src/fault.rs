//! Crash points for tests that must stop the process between two steps of one operation.
//!
//! `RESUMABLE_FAULT_POINT=<name>` makes the process abort (no destructors, no flushing, as
//! close to `kill -9` as a process can do to itself) when it reaches the point of that name.
//! Unset, a point costs one load of a cached value.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("RESUMABLE_FAULT_POINT").ok());
    if wanted.as_deref() == Some(name) {
        eprintln!("fault point {name}: aborting");
        std::process::abort();
    }
}
