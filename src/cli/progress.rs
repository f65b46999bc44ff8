//! Waiting for a job the appliance runs, with a progress bar on a terminal.
//!
//! The bar goes to standard error and only when it is a terminal, so
//! scripts and golden tests see the summary alone.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a running job is polled.
pub const POLL: Duration = Duration::from_millis(250);

pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(prefix.to_string());
    pb
}

/// A printed result that is nonetheless a failure: the command prints
/// `output`, then fails with `message` (one line) and a non-zero exit.
#[derive(Debug)]
pub struct Partial {
    pub output: String,
    pub message: String,
}

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Partial {}
