//! The sensitivity search: which linear layers can run in int8 while the embeddings stay within the accuracy floor.
//!
//! 1. Each group of linear layers (those reading one activation: Q/K/V, attention output, MLP in, MLP out of each
//!    layer) is quantized **alone** and the calibration set embedded; its cost is how far the worst text's cosine
//!    against float32 falls. Each group is tried plain, with SmoothQuant (when on) and with its outlier input
//!    channels kept in float32 (when on and it has any); a treatment, which costs speed, is kept only where it at
//!    least halves the plain layer's loss (the best such one wins).
//! 2. The path starts from every group in int8 and keeps in float32, one at a time, the group that cost the most,
//!    measuring each configuration on the calibration set, until the worst cosine meets the floor.
//! 3. The chosen configuration is the first on the path that meets the floor: the one with the most int8 groups
//!    (the fastest, as every group kept in float32 costs speed). If none does, the closest one is reported.
//!
//! Cost on 2 cores for all-MiniLM-L6-v2 (24 groups): up to three times 24 single-group measurements plus the path.

use std::collections::BTreeMap;

use bulkhead_graph::quant::{outlier_channels, smooth_factors};
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
    /// Which input channels count as outliers kept in float32 (`None`: off).
    pub outliers: Option<OutlierOptions>,
    /// The int8 operators.
    pub form: Int8Form,
}

/// Outlier channels: those whose calibration maximum is at least `ratio` times the median channel's, at most
/// `max_fraction` of a layer's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutlierOptions {
    /// The multiple of the median channel maximum from which a channel is an outlier.
    pub ratio: f32,
    /// The largest share of a layer's input channels kept in float32.
    pub max_fraction: f32,
}

impl Default for OutlierOptions {
    fn default() -> Self {
        // Measured on all-MiniLM-L6-v2 (crate README): 3 lets the Q/K/V groups find their outliers too, and with the
        // gain rule of the search the configuration meeting 0.999 ran 1.23-1.30x fp32, against 1.18x with 6.
        OutlierOptions { ratio: 3.0, max_fraction: 1.0 / 32.0 }
    }
}

/// How a group's int8 layers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    /// Plain per-channel int8.
    #[default]
    Plain,
    /// SmoothQuant scaling folded into the weights.
    Smooth,
    /// Outlier input channels computed in float32 beside the int8 product.
    Outliers,
}

/// How much quantizing one group alone costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSensitivity {
    /// The group's name.
    pub group: String,
    /// Its weight elements.
    pub params: usize,
    /// Calibration accuracy with only this group in int8.
    pub plain: Accuracy,
    /// The same with SmoothQuant, when tried.
    pub smoothed: Option<Accuracy>,
    /// The same with its outlier channels in float32, when tried (the group has outliers).
    #[serde(default)]
    pub with_outliers: Option<Accuracy>,
    /// How many input channels are outliers.
    #[serde(default)]
    pub outlier_channels: usize,
    /// The treatment the group uses (the one that measured best).
    #[serde(default)]
    pub treatment: Treatment,
}

impl GroupSensitivity {
    /// The accuracy of the treatment the group uses.
    pub fn best(&self) -> Accuracy {
        match self.treatment {
            Treatment::Smooth => self.smoothed.unwrap_or(self.plain),
            Treatment::Outliers => self.with_outliers.unwrap_or(self.plain),
            Treatment::Plain => self.plain,
        }
    }
}

/// One configuration on the search's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Groups in int8.
    pub int8_groups: usize,
    /// Weight elements in int8.
    pub int8_params: usize,
    /// The groups kept in float32, the costliest first.
    pub fp32_groups: Vec<String>,
    /// The int8 groups that use SmoothQuant.
    pub smoothed_groups: Vec<String>,
    /// The int8 groups that keep their outlier channels in float32.
    #[serde(default)]
    pub outlier_groups: Vec<String>,
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

/// What each group may use: its SmoothQuant factors and its outlier channels, by group name.
#[derive(Debug, Default)]
struct Treatments {
    smooth: BTreeMap<String, Vec<f32>>,
    outliers: BTreeMap<String, Vec<usize>>,
}

/// A plan with `groups` in int8, each written with the treatment `chosen` names for it (plain when none).
fn plan_of(groups: &[&LinearGroup], t: &Treatments, chosen: &BTreeMap<String, Treatment>, form: Int8Form) -> QuantPlan {
    let mut plan = QuantPlan { form, ..QuantPlan::default() };
    for g in groups {
        let treatment = chosen.get(&g.name).copied().unwrap_or_default();
        for l in &g.layers {
            plan.int8.insert(l.name.clone());
            match treatment {
                Treatment::Smooth => {
                    if let Some(s) = t.smooth.get(&g.name) {
                        plan.smooth.insert(l.name.clone(), s.clone());
                    }
                }
                Treatment::Outliers => {
                    if let Some(o) = t.outliers.get(&g.name) {
                        plan.outliers.insert(l.name.clone(), o.clone());
                    }
                }
                Treatment::Plain => {}
            }
        }
    }
    plan
}

/// SmoothQuant factors and outlier channels per group name, from the calibration activations.
fn treatments(
    ev: &Evaluator,
    groups: &[LinearGroup],
    rows: &[Vec<i64>],
    opts: &SearchOptions,
) -> Result<Treatments, QuantizeError> {
    let mut t = Treatments::default();
    if opts.smooth_alpha.is_none() && opts.outliers.is_none() {
        return Ok(t);
    }
    let act = ev.activation_absmax(rows)?;
    let cols = bulkhead_graph::weight_column_absmax(ev.model(), &BuildOptions::default())?;
    for g in groups {
        let Some(a) = act.get(&g.layers[0].name) else { continue };
        if let Some(alpha) = opts.smooth_alpha {
            let mut w = vec![0f32; g.din()];
            for l in &g.layers {
                if let Some(c) = cols.get(&l.name) {
                    w.iter_mut().zip(c).for_each(|(m, v)| *m = m.max(*v));
                }
            }
            t.smooth.insert(g.name.clone(), smooth_factors(a, &w, alpha));
        }
        if let Some(o) = opts.outliers {
            let channels = outlier_channels(a, o.ratio, o.max_fraction);
            if !channels.is_empty() {
                t.outliers.insert(g.name.clone(), channels);
            }
        }
    }
    Ok(t)
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
    let t = treatments(ev, &groups, rows, opts)?;
    let sensitivity =
        groups.iter().map(|g| sensitivity(ev, g, &t, rows, reference, opts.form)).collect::<Result<Vec<_>, _>>()?;
    let chosen: BTreeMap<String, Treatment> = sensitivity.iter().map(|s| (s.group.clone(), s.treatment)).collect();
    // Costliest first: the order in which groups go back to float32.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (sensitivity[a].best(), sensitivity[b].best());
        x.min_cosine.total_cmp(&y.min_cosine).then(x.mean_cosine.total_cmp(&y.mean_cosine))
    });
    let mut path = vec![];
    let mut picked = None;
    for kept in 0..groups.len() {
        let fp32: Vec<usize> = order[..kept].to_vec();
        let int8: Vec<&LinearGroup> = (0..groups.len()).filter(|i| !fp32.contains(i)).map(|i| &groups[i]).collect();
        let plan = plan_of(&int8, &t, &chosen, opts.form);
        let calibration = compare(&ev.embed(Variant::Int8(&plan), rows)?, reference);
        tracing::info!(int8 = int8.len(), min = calibration.min_cosine, "int8 path");
        let using = |want: Treatment| -> Vec<String> {
            int8.iter().filter(|g| chosen.get(&g.name) == Some(&want)).map(|g| g.name.clone()).collect()
        };
        path.push(Step {
            int8_groups: int8.len(),
            int8_params: int8.iter().map(|g| g.params()).sum(),
            fp32_groups: fp32.iter().map(|&i| groups[i].name.clone()).collect(),
            smoothed_groups: using(Treatment::Smooth),
            outlier_groups: using(Treatment::Outliers),
            calibration,
            plan,
        });
        if calibration.min_cosine >= opts.min_cosine {
            picked = Some(path.len() - 1);
            break;
        }
    }
    Ok(Search { sensitivity, path, chosen: picked, linear_params: groups.iter().map(LinearGroup::params).sum() })
}

/// A treatment costs speed (an extra pass over the activation), so it replaces the plain layer only where it at
/// least halves the accuracy loss (1 - min cosine); the best such one wins.
fn choose_treatment(plain: Accuracy, smoothed: Option<Accuracy>, with_outliers: Option<Accuracy>) -> Treatment {
    let loss = |a: &Accuracy| 1.0 - a.min_cosine;
    let mut treatment = Treatment::Plain;
    let mut best = loss(&plain) * TREATMENT_GAIN;
    for (candidate, acc) in [(Treatment::Smooth, smoothed), (Treatment::Outliers, with_outliers)] {
        if let Some(a) = acc.filter(|a| loss(a) < best) {
            (treatment, best) = (candidate, loss(&a));
        }
    }
    treatment
}

/// The share of the plain layer's accuracy loss a treatment must stay under to be used (0.5: it must at least halve
/// the loss).
const TREATMENT_GAIN: f64 = 0.5;

/// The cost of `g` alone in int8 under each treatment it can have; it keeps the best one that is worth its cost.
fn sensitivity(
    ev: &Evaluator,
    g: &LinearGroup,
    t: &Treatments,
    rows: &[Vec<i64>],
    reference: &[Vec<f32>],
    form: Int8Form,
) -> Result<GroupSensitivity, QuantizeError> {
    let measure = |treatment: Treatment| -> Result<Accuracy, QuantizeError> {
        let plan = plan_of(&[g], t, &BTreeMap::from([(g.name.clone(), treatment)]), form);
        Ok(compare(&ev.embed(Variant::Int8(&plan), rows)?, reference))
    };
    let plain = measure(Treatment::Plain)?;
    let smoothed = if t.smooth.contains_key(&g.name) { Some(measure(Treatment::Smooth)?) } else { None };
    let with_outliers = if t.outliers.contains_key(&g.name) { Some(measure(Treatment::Outliers)?) } else { None };
    let treatment = choose_treatment(plain, smoothed, with_outliers);
    tracing::info!(group = g.name, plain = plain.min_cosine, smoothed = ?smoothed.map(|s| s.min_cosine),
        outliers = ?with_outliers.map(|s| s.min_cosine), "int8 sensitivity");
    Ok(GroupSensitivity {
        group: g.name.clone(),
        params: g.params(),
        plain,
        smoothed,
        with_outliers,
        outlier_channels: t.outliers.get(&g.name).map_or(0, Vec::len),
        treatment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(min_cosine: f64) -> Accuracy {
        Accuracy { min_cosine, mean_cosine: min_cosine, top10_overlap: 1.0 }
    }

    #[test]
    fn a_treatment_is_used_only_where_it_at_least_halves_the_loss() {
        // Loss 1e-3 plain: outliers at 4e-4 halve it and win; smoothing at 6e-4 does not.
        assert_eq!(choose_treatment(acc(0.999), Some(acc(0.9994)), Some(acc(0.9996))), Treatment::Outliers);
        // A small gain is not worth the extra pass.
        assert_eq!(choose_treatment(acc(0.9999), None, Some(acc(0.99992))), Treatment::Plain);
        // Both halve it: the better one.
        assert_eq!(choose_treatment(acc(0.99), Some(acc(0.999)), Some(acc(0.998))), Treatment::Smooth);
        // Worse than plain never wins.
        assert_eq!(choose_treatment(acc(0.999), Some(acc(0.96)), None), Treatment::Plain);
    }
}
