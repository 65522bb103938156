//! Browser tests: Debian's headless Chromium, driven through chromedriver, uses the real page
//! against the real server.

#[path = "../e2e/garage.rs"]
mod garage;
#[path = "../e2e/support.rs"]
mod support;

mod a11y;
mod csp;
mod harness;
mod page;
