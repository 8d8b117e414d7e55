//! What a download reports while it runs. The library only emits [`Event`]s; the caller draws them (a progress bar
//! on a terminal, periodic log lines otherwise).

use std::time::Duration;

/// One step of resolving and downloading a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// The revision resolved to `commit`; `files` files (`bytes` bytes in all) must be downloaded, `cached` files
    /// the model needs are already in the cache. Emitted once per batch of downloads (metadata, then weights).
    Plan {
        /// `ORG/NAME`.
        repo: &'a str,
        /// The commit.
        commit: &'a str,
        /// Files to download.
        files: usize,
        /// Their total size (what the hub announced).
        bytes: u64,
        /// Needed files already cached.
        cached: usize,
    },
    /// A file download starts (at `offset` when it resumes a partial download).
    FileStarted {
        /// The repository path.
        file: &'a str,
        /// Its size.
        size: u64,
        /// Bytes already on disk from an earlier attempt.
        offset: u64,
    },
    /// Bytes arrived: `done` of `size` bytes of `file` are on disk.
    Bytes {
        /// The repository path.
        file: &'a str,
        /// Bytes on disk.
        done: u64,
        /// Its size.
        size: u64,
    },
    /// A transfer failed and is retried from where it stopped.
    Retrying {
        /// The repository path.
        file: &'a str,
        /// The attempt about to start (2 = first retry).
        attempt: u32,
        /// Why the previous one failed.
        reason: &'a str,
    },
    /// A file is complete, verified and linked into the snapshot.
    FileDone {
        /// The repository path.
        file: &'a str,
        /// Its size.
        size: u64,
    },
    /// Every file the model needs is in the snapshot.
    Finished {
        /// Bytes downloaded by this run.
        downloaded: u64,
        /// Wall time of the whole resolution.
        elapsed: Duration,
    },
}

/// Receives [`Event`]s; called on the downloading thread, so it should return quickly.
pub trait Progress {
    /// One event.
    fn event(&self, event: &Event<'_>);
}

/// Ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &Event<'_>) {}
}
