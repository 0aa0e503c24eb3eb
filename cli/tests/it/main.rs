//! The whole system, tested from outside, in one binary (one link instead of one per file):
//!
//! - [`system`]: `mp3converter up` as a user runs it, the README's walkthroughs, the CLI, the
//!   web page in Chromium, and `up` on the real servers; [`up_process`] runs it;
//! - [`faults`], [`load`], [`security`]: the five services as separate processes
//!   (`test_support::cluster`), under faults, under load, and probed for leaks;
//! - [`containers`]: the images and the rendered Kubernetes manifests under podman.

mod containers;
mod faults;
mod load;
mod readme;
mod security;
mod system;
mod up_process;

use std::path::Path;

/// The `mp3converter` program under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mp3converter"))
}
