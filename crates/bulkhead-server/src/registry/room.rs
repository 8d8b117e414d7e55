//! Room under the limits: which models to unload so that another fits, what a model takes in memory, and what
//! tells that a model's files changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bulkhead_core::ModelFiles;

use super::{mb, Limits, Phase, Registry, Slot};
use crate::model::ModelEntry;

/// Which loaded models to unload so that `name` fits under the limits: the least recently used unpinned ones, as
/// few as needed; an error saying why when even unloading all of them would not do.
pub(super) fn plan_room(slots: &BTreeMap<String, Slot>, name: &str, limits: &Limits) -> Result<Vec<String>, String> {
    let slot = slots.get(name);
    let mut need = slot.map_or(0, Slot::expected_bytes);
    if let Some(budget) = limits.memory_budget_bytes {
        let measured = slot.is_some_and(|s| s.stats.resident_bytes.is_some());
        if !measured {
            // An estimate may be pessimistic: try with all the room there is; the model is measured once loaded.
            need = need.min(budget);
        } else if need > budget {
            return Err(format!(
                "model `{name}` needs about {}, more than --memory-budget-mb {}",
                mb(need),
                budget >> 20
            ));
        }
    }
    let mut evictable: Vec<(Instant, &String)> = slots
        .iter()
        .filter(|(n, s)| !s.pinned && n.as_str() != name && matches!(s.phase, Phase::Loaded(_)))
        .map(|(n, s)| (s.last_used, n))
        .collect();
    evictable.sort();
    let mut victims: Vec<String> = vec![];
    let mut evictable = evictable.into_iter();
    loop {
        let staying = || {
            slots.iter().filter(|(n, s)| {
                n.as_str() != name
                    && matches!(s.phase, Phase::Loaded(_) | Phase::Loading)
                    && !victims.iter().any(|v| v == *n)
            })
        };
        let count = staying().count();
        let used: u64 = staying()
            .map(|(_, s)| match &s.phase {
                Phase::Loaded(e) => resident(e),
                _ => s.expected_bytes(),
            })
            .sum();
        let count_ok = limits.max_loaded.is_none_or(|m| count < m);
        let memory_ok = limits.memory_budget_bytes.is_none_or(|b| used + need <= b);
        if count_ok && memory_ok {
            return Ok(victims);
        }
        match evictable.next() {
            Some((_, v)) => victims.push(v.clone()),
            None => {
                let held = staying().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                let limit = if count_ok {
                    format!(
                        "--memory-budget-mb {}: the loaded models take {} and `{name}` needs about {}",
                        limits.memory_budget_bytes.unwrap_or(0) >> 20,
                        mb(used),
                        mb(need)
                    )
                } else {
                    format!("--max-loaded-models {} are loaded", limits.max_loaded.unwrap_or(0))
                };
                return Err(format!(
                    "cannot load model `{name}`: {limit}, and none of them ({held}) can be unloaded now (loaded at \
                     start, or loading); retry shortly"
                ));
            }
        }
    }
}

/// Resident memory of a loaded model's workers, now.
pub(super) fn resident(entry: &ModelEntry) -> u64 {
    backend_resident(entry.backend.as_ref())
}

pub(super) fn backend_resident(backend: &dyn crate::backend::Backend) -> u64 {
    backend.units().units.iter().flat_map(|u| u.workers.iter()).map(|w| w.resident_bytes).sum()
}

/// Bytes of a model's weights files.
pub(super) fn weights_bytes(files: &ModelFiles) -> u64 {
    let size = |p: &PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut total: u64 = if files.safetensors_shards.is_empty() {
        files.safetensors.iter().map(size).sum()
    } else {
        files.safetensors_shards.iter().map(size).sum()
    };
    if total == 0 {
        total = files.onnx.iter().map(size).sum();
    }
    total
}

/// A digest of a model folder's file names, sizes and modification times (its top level and one level below):
/// what tells that its files changed.
pub(super) fn fingerprint(source: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    fn visit(dir: &Path, depth: u32, h: &mut impl Hasher) {
        let Ok(read) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = read.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(meta) = std::fs::metadata(e.path()) else { continue };
            e.file_name().hash(h);
            meta.len().hash(h);
            meta.modified().ok().hash(h);
            if meta.is_dir() && depth > 0 {
                visit(&e.path(), depth - 1, h);
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(meta) = std::fs::metadata(source) {
        meta.len().hash(&mut h);
        meta.modified().ok().hash(&mut h);
    }
    visit(source, 1, &mut h);
    h.finish()
}

/// The memory budget, measured: before a model serves, while idle models are checked, and at start.
impl Registry {
    /// Unloads the least recently used idle unpinned models while the loaded ones, plus `extra` bytes (a model
    /// about to serve), take more than the memory budget (memory also grows after a load).
    pub(super) async fn enforce_budget(&self, extra: u64) {
        let Some(budget) = self.limits.memory_budget_bytes else { return };
        let victims: Vec<String> = {
            let mut slots = self.lock();
            let mut used = extra;
            let mut idle = vec![];
            for (name, s) in slots.iter_mut() {
                if let Phase::Loaded(e) = &s.phase {
                    let bytes = resident(e);
                    s.stats.resident_bytes = Some(bytes);
                    used += bytes;
                    if !s.pinned && Arc::strong_count(e) == 1 {
                        idle.push((s.last_used, name.clone(), bytes));
                    }
                }
            }
            idle.sort();
            let mut victims = vec![];
            for (_, name, bytes) in idle {
                if used <= budget {
                    break;
                }
                used = used.saturating_sub(bytes);
                victims.push(name);
            }
            for v in &victims {
                let slot = slots.get_mut(v).expect("a victim is a known model");
                if let Phase::Loaded(e) = std::mem::replace(&mut slot.phase, Phase::Available) {
                    slot.phase = Phase::Draining(e);
                    slot.stats.evictions += 1;
                    self.metrics.model_evicted(v);
                }
            }
            victims
        };
        for v in victims {
            tracing::info!("unloading model {v}: the loaded models take more than --memory-budget-mb");
            self.finish_unload(&v, "evicted").await;
        }
    }

    /// The budget check at start: a memory budget smaller than what any one model needs is refused, with the
    /// sizes; so is one the pinned models alone exceed.
    pub fn check_budget(&self) -> Result<(), String> {
        let Some(budget) = self.limits.memory_budget_bytes else { return Ok(()) };
        let slots = self.lock();
        let pinned: Vec<(String, u64)> = slots
            .iter()
            .filter_map(|(n, s)| match &s.phase {
                Phase::Loaded(e) if s.pinned => Some((n.clone(), resident(e))),
                _ => None,
            })
            .collect();
        let pinned_total: u64 = pinned.iter().map(|(_, b)| b).sum();
        if pinned_total > budget {
            let each = pinned.iter().map(|(n, b)| format!("{n} {}", mb(*b))).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "--memory-budget-mb {}: the models loaded at start already take {} ({each}); raise the budget",
                budget >> 20,
                mb(pinned_total)
            ));
        }
        // The weights alone are a lower bound of what a model takes.
        let needs: Vec<(String, u64)> = slots
            .iter()
            .filter(|(_, s)| !s.pinned)
            .filter_map(|(n, s)| Some((n.clone(), weights_bytes(s.files.as_ref().ok()?))))
            .collect();
        if !needs.is_empty() && needs.iter().all(|(_, b)| pinned_total + b > budget) {
            let each = needs.iter().map(|(n, b)| format!("{n} ~{}", mb(*b))).collect::<Vec<_>>().join(", ");
            return Err(format!(
                "--memory-budget-mb {} is smaller than any one model's weights ({each}{}); raise the budget",
                budget >> 20,
                if pinned_total > 0 {
                    format!(", beside {} of models loaded at start", mb(pinned_total))
                } else {
                    String::new()
                }
            ));
        }
        Ok(())
    }
}
