//! The Hugging Face hub client of bulkhead: `ORG/NAME[@REVISION]` model ids resolved in the cache that
//! `huggingface_hub` shares with every Python tool, and downloaded into it when absent.
//!
//! * [`repo`]: model ids and their cache folder names;
//! * [`config`]: `HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` / `BULKHEAD_OFFLINE`, read
//!   exactly as `huggingface_hub` reads them;
//! * [`cache`]: the cache layout (`models--ORG--NAME/{blobs,refs,snapshots}`), atomic refs and links, locks;
//! * [`select`]: which files of a repository a model needs (the rule is written down there);
//! * [`client`]: the hub's HTTP API (revision info, file metadata, ranged downloads);
//! * [`download`]: one file into the cache: resumable, verified against its ETag, atomic;
//! * [`progress`]: what a download reports, for the caller to draw;
//! * [`error`]: one typed error that names the repository and says what to do.
//!
//! [`Hub::snapshot`] ties them together: it returns a folder (`snapshots/COMMIT`) holding every file the model
//! needs, downloading only what is missing.
//!
//! # Architecture invariants
//!
//! * **A file exists under its final name only once complete and verified** against its ETag (sha256 or git blob
//!   sha1), and a `snapshots/` link only once its blob does; `refs/REV` moves only when the snapshot holds every
//!   needed file.
//! * **Offline mode never opens a socket.**
//! * **The token never leaves the hub's origin** (a redirect to a CDN is followed without it).
#![deny(missing_docs)]

pub mod cache;
pub mod client;
pub mod config;
pub mod download;
pub mod error;
pub mod progress;
pub mod repo;
pub mod select;
mod snapshot;

pub use config::HubConfig;
pub use error::{ErrorKind, HubError};
pub use progress::{Event, NoProgress, Progress};
pub use repo::ModelRef;
pub use select::{Formats, Listing, WeightsContext};
pub use snapshot::{Hub, Snapshot};
