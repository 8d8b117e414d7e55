//! The report's renderers: each reads a finished [`Report`](crate::report::Report) and measures nothing, so a saved
//! JSON report renders exactly as a fresh one (`bulkhead doctor --from-json`).
//!
//! * [`terminal`]: tables, colour on a terminal;
//! * [`html`]: one self-contained page, with charts drawn by [`svg`];
//! * [`json`]: the `bulkhead.doctor/1` document, and reading it back.

pub mod html;
pub mod json;
pub mod svg;
pub mod terminal;
