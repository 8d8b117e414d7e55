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
    /// By model name.
    pub models: BTreeMap<String, ModelUnits>,
}
