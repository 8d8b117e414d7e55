//! The registry of engines compiled into the binary.

use bulkhead_core::{Availability, Engine, EngineError, EngineKind, GraphSession, ModelFiles, Session, Unit};

/// The engines this build has, by kind. A unit whose engine is absent is `NotCompiled`.
#[derive(Default)]
pub struct Engines {
    engines: Vec<(EngineKind, Box<dyn Engine>)>,
}

impl Engines {
    /// A registry of the given engines.
    pub fn new(engines: Vec<(EngineKind, Box<dyn Engine>)>) -> Engines {
        Engines { engines }
    }

    fn get(&self, unit: &Unit) -> Option<&dyn Engine> {
        self.engines.iter().find(|(k, _)| *k == unit.engine).map(|(_, e)| e.as_ref())
    }

    fn not_compiled(unit: &Unit) -> String {
        format!(
            "this build has no `{}` engine; rebuild with `--features {}`",
            unit.engine.as_str(),
            unit.engine.as_str()
        )
    }

    /// The engine that runs `unit` (for models that load several graphs themselves, such as speech models).
    pub fn engine(&self, unit: &Unit) -> Result<&dyn Engine, EngineError> {
        self.get(unit)
            .ok_or_else(|| EngineError::NotCompiled { unit: unit.to_string(), reason: Self::not_compiled(unit) })
    }

    /// Whether `unit` can be tried here.
    pub fn availability(&self, unit: &Unit) -> Availability {
        match self.get(unit) {
            Some(e) => e.availability(unit),
            None => Availability::NotCompiled(Self::not_compiled(unit)),
        }
    }

    /// The runtime and version that would run `unit` (`none` when this build lacks its engine).
    pub fn runtime(&self, unit: &Unit) -> String {
        self.get(unit).map(|e| e.runtime(unit)).unwrap_or_else(|| "none".to_string())
    }

    /// Loads `model` on `unit`.
    pub fn load(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn Session>, EngineError> {
        match self.get(unit) {
            Some(e) => e.load(model, unit),
            None => Err(EngineError::NotCompiled { unit: unit.to_string(), reason: Self::not_compiled(unit) }),
        }
    }

    /// Loads the tensor model `model` on `unit` as a plain graph.
    pub fn load_graph(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn GraphSession>, EngineError> {
        match self.get(unit) {
            Some(e) => e.load_graph(model, unit),
            None => Err(EngineError::NotCompiled { unit: unit.to_string(), reason: Self::not_compiled(unit) }),
        }
    }

    /// Runs `f` with the engine of `unit` (several graphs of one model load through it).
    pub fn with_engine<T>(
        &self,
        unit: &Unit,
        f: impl FnOnce(&dyn Engine) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        match self.get(unit) {
            Some(e) => f(e),
            None => Err(EngineError::NotCompiled { unit: unit.to_string(), reason: Self::not_compiled(unit) }),
        }
    }
}
