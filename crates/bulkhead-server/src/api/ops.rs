//! Operations: `/health` and `/units`.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::units::ModelUnits;

/// The answer of `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` when every model has a unit that answered a real forward pass recently.
    pub status: HealthStatus,
    /// Per model: whether it is healthy.
    pub models: BTreeMap<String, bool>,
}

/// The overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every model answers.
    Ok,
    /// A model has no unit that answers.
    Unhealthy,
}

/// The answer of `GET /units`: per model ([`ModelUnits`]), the supervisor's view (chain, each unit's state, crashes by signal, last
/// exit and stderr tail, predictions, resident memory, recycles, warm-up latency, node placement).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Units {
    /// By model name: the loaded models.
    pub models: BTreeMap<String, ModelUnits>,
    /// By model name: every model's lifecycle (loaded at start or on demand, unloaded when idle or for room).
    pub lifecycle: BTreeMap<String, ModelLifecycle>,
}

/// A model's lifecycle, as `GET /v1/models` also gives it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelLifecycle {
    /// `available`, `loading`, `loaded`, `draining` or `failed`.
    pub state: crate::api::models::ModelState,
    /// Loaded at start (`--model`): never unloaded for idleness or room.
    pub pinned: bool,
    /// Successful loads.
    pub loads: u64,
    /// Failed loads.
    pub load_failures: u64,
    /// Unloads, for any reason.
    pub unloads: u64,
    /// Unloads to make room for another model.
    pub evictions: u64,
    /// Milliseconds the last load took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
    /// Resident memory of its workers (now when loaded; the last measure otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident_bytes: Option<u64>,
    /// Why its last load failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
