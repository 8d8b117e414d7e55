//! The sensitivity search: which linear layers can run in int8 while the embeddings stay within the accuracy floor.
//!
//! 1. Each group of linear layers (those reading one activation: Q/K/V, attention output, MLP in, MLP out of each
//!    layer) is quantized **alone** and the calibration set embedded; its cost is how far the worst text's cosine
//!    against float32 falls. With SmoothQuant on, each group is tried with and without it and keeps the better.
//! 2. The path starts from every group in int8 and keeps in float32, one at a time, the group that cost the most,
//!    measuring each configuration on the calibration set, until the worst cosine meets the floor.
//! 3. The chosen configuration is the first on the path that meets the floor: the one with the most int8 groups
//!    (the fastest, as every group kept in float32 costs speed). If none does, the closest one is reported.
//!
//! Cost on 2 cores for all-MiniLM-L6-v2 (24 groups): about twice 24 single-group measurements plus the path.

use std::collections::BTreeMap;

use bulkhead_graph::quant::smooth_factors;
use bulkhead_graph::{BuildOptions, Int8Form, LinearGroup, QuantPlan, Variant};
use serde::{Deserialize, Serialize};

use crate::measure::{compare, Accuracy, Evaluator};
use crate::QuantizeError;

/// What the search aims for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// The lowest acceptable cosine against float32 of any calibration text.
    pub min_cosine: f64,
    /// SmoothQuant's migration strength α (`None`: off).
    pub smooth_alpha: Option<f32>,
    /// The int8 operators.
    pub form: Int8Form,
}

/// How much quantizing one group alone costs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSensitivity {
    /// The group's name.
    pub group: String,
    /// Its weight elements.
    pub params: usize,
    /// Calibration accuracy with only this group in int8.
    pub plain: Accuracy,
    /// The same with SmoothQuant, when tried.
    pub smoothed: Option<Accuracy>,
    /// Whether the group uses SmoothQuant (it measured better).
    pub smooth: bool,
}

impl GroupSensitivity {
    /// The accuracy of the option the group uses.
    pub fn best(&self) -> Accuracy {
        match (self.smooth, self.smoothed) {
            (true, Some(s)) => s,
            _ => self.plain,
        }
    }
}

/// One configuration on the search's path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Groups in int8.
    pub int8_groups: usize,
    /// Weight elements in int8.
    pub int8_params: usize,
    /// The groups kept in float32, the costliest first.
    pub fp32_groups: Vec<String>,
    /// The int8 groups that use SmoothQuant.
    pub smoothed_groups: Vec<String>,
    /// Accuracy on the calibration set.
    pub calibration: Accuracy,
    /// The plan (the layers, not only the groups).
    #[serde(skip)]
    pub plan: QuantPlan,
}

/// The result of the search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Every group's cost, in graph order.
    pub sensitivity: Vec<GroupSensitivity>,
    /// The configurations measured, from all groups in int8 to fewer.
    pub path: Vec<Step>,
    /// The index in `path` of the first configuration that meets the floor.
    pub chosen: Option<usize>,
    /// Weight elements of all linear layers.
    pub linear_params: usize,
}

impl Search {
    /// The configuration with the highest worst-text cosine (the closest to a floor nobody meets).
    pub fn closest(&self) -> usize {
        (0..self.path.len())
            .max_by(|&a, &b| self.path[a].calibration.min_cosine.total_cmp(&self.path[b].calibration.min_cosine))
            .unwrap_or(0)
    }
}

/// A plan with `groups` in int8, each with its SmoothQuant factors when `smooth` has them.
fn plan_of(groups: &[&LinearGroup], smooth: &BTreeMap<String, Vec<f32>>, form: Int8Form) -> QuantPlan {
    let mut plan = QuantPlan { form, ..QuantPlan::default() };
    for g in groups {
        for l in &g.layers {
            plan.int8.insert(l.name.clone());
            if let Some(s) = smooth.get(&g.name) {
                plan.smooth.insert(l.name.clone(), s.clone());
            }
        }
    }
    plan
}

/// SmoothQuant factors per group name, from the calibration activations.
fn smoothing(
    ev: &Evaluator,
    groups: &[LinearGroup],
    rows: &[Vec<i64>],
    alpha: f32,
) -> Result<BTreeMap<String, Vec<f32>>, QuantizeError> {
    let act = ev.activation_absmax(rows)?;
    let cols = bulkhead_graph::weight_column_absmax(ev.model(), &BuildOptions::default())?;
    let mut out = BTreeMap::new();
    for g in groups {
        let Some(a) = act.get(&g.layers[0].name) else { continue };
        let mut w = vec![0f32; g.din()];
        for l in &g.layers {
            if let Some(c) = cols.get(&l.name) {
                w.iter_mut().zip(c).for_each(|(m, v)| *m = m.max(*v));
            }
        }
        out.insert(g.name.clone(), smooth_factors(a, &w, alpha));
    }
    Ok(out)
}

/// Runs the search on the calibration rows; `reference` is their float32 embedding.
pub fn search(
    ev: &Evaluator,
    rows: &[Vec<i64>],
    reference: &[Vec<f32>],
    opts: &SearchOptions,
) -> Result<Search, QuantizeError> {
    let groups = bulkhead_graph::linear_groups(ev.model(), &BuildOptions::default())?;
    if groups.is_empty() {
        return Err(QuantizeError::Model("the graph has no linear layer to quantize".into()));
    }
    let smooth = match opts.smooth_alpha {
        Some(alpha) => smoothing(ev, &groups, rows, alpha)?,
        None => BTreeMap::new(),
    };
    let none = BTreeMap::new();
    let mut sensitivity = vec![];
    for g in &groups {
        let measure = |s: &BTreeMap<String, Vec<f32>>| -> Result<Accuracy, QuantizeError> {
            let plan = plan_of(&[g], s, opts.form);
            Ok(compare(&ev.embed(Variant::Int8(&plan), rows)?, reference))
        };
        let plain = measure(&none)?;
        let smoothed = if smooth.contains_key(&g.name) { Some(measure(&smooth)?) } else { None };
        let use_smooth = smoothed.is_some_and(|s| s.min_cosine > plain.min_cosine);
        tracing::info!(group = g.name, plain = plain.min_cosine, smoothed = ?smoothed.map(|s| s.min_cosine),
            "int8 sensitivity");
        sensitivity.push(GroupSensitivity {
            group: g.name.clone(),
            params: g.params(),
            plain,
            smoothed,
            smooth: use_smooth,
        });
    }
    let chosen_smooth: BTreeMap<String, Vec<f32>> = sensitivity
        .iter()
        .filter(|s| s.smooth)
        .filter_map(|s| smooth.get(&s.group).map(|f| (s.group.clone(), f.clone())))
        .collect();
    // Costliest first: the order in which groups go back to float32.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (sensitivity[a].best(), sensitivity[b].best());
        x.min_cosine.total_cmp(&y.min_cosine).then(x.mean_cosine.total_cmp(&y.mean_cosine))
    });
    let mut path = vec![];
    let mut chosen = None;
    for kept in 0..groups.len() {
        let fp32: Vec<usize> = order[..kept].to_vec();
        let int8: Vec<&LinearGroup> = (0..groups.len()).filter(|i| !fp32.contains(i)).map(|i| &groups[i]).collect();
        let plan = plan_of(&int8, &chosen_smooth, opts.form);
        let calibration = compare(&ev.embed(Variant::Int8(&plan), rows)?, reference);
        tracing::info!(int8 = int8.len(), min = calibration.min_cosine, "int8 path");
        path.push(Step {
            int8_groups: int8.len(),
            int8_params: int8.iter().map(|g| g.params()).sum(),
            fp32_groups: fp32.iter().map(|&i| groups[i].name.clone()).collect(),
            smoothed_groups: int8
                .iter()
                .filter(|g| chosen_smooth.contains_key(&g.name))
                .map(|g| g.name.clone())
                .collect(),
            calibration,
            plan,
        });
        if calibration.min_cosine >= opts.min_cosine {
            chosen = Some(path.len() - 1);
            break;
        }
    }
    Ok(Search { sensitivity, path, chosen, linear_params: groups.iter().map(LinearGroup::params).sum() })
}
