//! int8 linear layers: weights quantized here, in Rust (symmetric, one scale per output channel), activations
//! quantized dynamically by ONNX Runtime at run time, per tensor.
//!
//! A [`QuantPlan`] names the linear layers (by their weight prefix, e.g. `encoder.layer.0.intermediate.dense`) that
//! run in int8; every other layer keeps its float32 `MatMul`. Two operator forms are written ([`Int8Form`]):
//!
//! * `Fused`: ONNX Runtime's `com.microsoft.DynamicQuantizeMatMul(x, W_int8, w_scale[N], -, bias)`, the operator
//!   its optimiser produces from the standard form, run by MLAS's u8·s8 GEMM;
//! * `Standard`: `DynamicQuantizeLinear → MatMulInteger → Cast → Mul(x_scale · w_scale) → Add(bias)`, standard ONNX
//!   operators only (what other runtimes and execution providers understand); ONNX Runtime's CPU optimiser fuses it
//!   into the same `DynamicQuantizeMatMul`.
//!
//! SmoothQuant (Xiao et al., 2023): when the plan has per-input-channel factors `s` for a layer, the activation is
//! divided by `s` (one `Mul` before the layer, shared by the layers reading the same input) and the weight's columns
//! multiplied by `s` before quantization, which moves activation outliers into the weights, where each output channel
//! has its own scale.
//!
//! Outlier channels (the mixed-precision decomposition of LLM.int8(), Dettmers et al., 2022): when the plan names
//! input channels of a layer as outliers, those channels are multiplied by zero before the activation is quantized
//! (so they no longer set its one scale) and their weight rows are left out of the int8 weight; a small float32
//! `MatMul` of the gathered outlier channels with their weight rows is added to the int8 result. One mask and one
//! `Gather` per activation serve every layer that reads it.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::{attr_int, Graph, FLOAT};
use crate::GraphError;

/// ONNX `TensorProto.DataType` of int8.
const INT8: i64 = 3;

/// Which operators carry the int8 layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Int8Form {
    /// `com.microsoft.DynamicQuantizeMatMul` (ONNX Runtime only).
    #[default]
    Fused,
    /// `DynamicQuantizeLinear` + `MatMulInteger` + `Cast` + `Mul` (+ `Add`), standard ONNX.
    Standard,
}

/// Which linear layers run in int8, and how.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuantPlan {
    /// Linear layers (weight prefix without the checkpoint's prefix) quantized to int8.
    pub int8: BTreeSet<String>,
    /// SmoothQuant factors per linear layer: the input is divided by them, the weight's columns multiplied. Only
    /// read for layers in `int8`; layers that read the same input must have the same factors.
    #[serde(default)]
    pub smooth: BTreeMap<String, Vec<f32>>,
    /// The operator form.
    #[serde(default)]
    pub form: Int8Form,
    /// Input channels per linear layer kept in float32 (outliers). Only read for layers in `int8`; layers that read
    /// the same input must have the same channels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outliers: BTreeMap<String, Vec<usize>>,
}

impl QuantPlan {
    /// A digest of the plan for cache keys.
    pub fn digest(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A linear layer of a built graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearLayer {
    /// Weight prefix (without the checkpoint's prefix).
    pub name: String,
    /// Input features.
    pub din: usize,
    /// Output features.
    pub dout: usize,
}

/// Linear layers that read the same activation: the unit the sensitivity search quantizes at once (the query, key
/// and value projections of a layer; gate and up projections). One activation quantization serves them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearGroup {
    /// A readable name: the common prefix of the members and their differing parts in braces.
    pub name: String,
    /// The members, in graph order.
    pub layers: Vec<LinearLayer>,
}

impl LinearGroup {
    /// Weight elements of the group.
    pub fn params(&self) -> usize {
        self.layers.iter().map(|l| l.din * l.dout).sum()
    }

    /// Input features (shared by the members).
    pub fn din(&self) -> usize {
        self.layers[0].din
    }
}

/// `din`, the layers and the activation that feeds them, in graph order; kept by [`Graph`] while building.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// (input activation, layer) in graph order.
    pub linears: Vec<(String, LinearLayer)>,
    /// Activation → the name of its `Mul(x, 1/s)` (SmoothQuant), so the layers of a group share one.
    pub smoothed: BTreeMap<String, String>,
    /// Activation → its (outlier channels zeroed, outlier channels gathered) pair, shared by a group's layers.
    pub split: BTreeMap<String, (String, String)>,
    /// Probe outputs (`ReduceMax(|x|)` per input channel), when probing: (output name, features).
    pub probes: Vec<(String, usize)>,
    /// Whether probe outputs are added.
    pub probing: bool,
    /// Whether a `com.microsoft` operator was written.
    pub contrib: bool,
}

/// Groups the recorded layers by the activation they read.
pub(crate) fn groups(linears: &[(String, LinearLayer)]) -> Vec<LinearGroup> {
    let mut order: Vec<&str> = vec![];
    let mut by_input: BTreeMap<&str, Vec<LinearLayer>> = BTreeMap::new();
    for (input, layer) in linears {
        if !by_input.contains_key(input.as_str()) {
            order.push(input);
        }
        by_input.entry(input).or_default().push(layer.clone());
    }
    order
        .into_iter()
        .map(|input| {
            let layers = by_input.remove(input).unwrap_or_default();
            LinearGroup { name: group_name(&layers), layers }
        })
        .collect()
}

/// `encoder.layer.0.attention.self.{query,key,value}` for three layers, the name itself for one.
fn group_name(layers: &[LinearLayer]) -> String {
    if layers.len() == 1 {
        return layers[0].name.clone();
    }
    let first = &layers[0].name;
    let mut common = layers
        .iter()
        .fold(first.len(), |n, l| first.bytes().zip(l.name.bytes()).take(n).take_while(|(a, b)| a == b).count());
    // Cut at a dot so the braces hold whole name parts.
    common = first[..common].rfind('.').map_or(0, |i| i + 1);
    let tails: Vec<&str> = layers.iter().map(|l| &l.name[common..]).collect();
    format!("{}{{{}}}", &first[..common], tails.join(","))
}

/// The probe output name of the activation read by `layer`.
pub fn probe_name(layer: &str) -> String {
    format!("absmax:{layer}")
}

/// Records the layer and, when probing, adds `ReduceMax(|x|)` over every axis but the last as an output (once per
/// activation).
pub(crate) fn record(g: &mut Graph<'_>, x: &str, name: &str, din: usize, dout: usize) {
    let first_reader = !g.rec.linears.iter().any(|(input, _)| input == x);
    g.rec.linears.push((x.to_string(), LinearLayer { name: name.to_string(), din, dout }));
    if g.rec.probing && first_reader {
        let flat = g.ints("shape_flat", &[-1, din as i64]);
        let rows = g.node("Reshape", "probe_rows", &[x, &flat], vec![]);
        let abs = g.node("Abs", "probe_abs", &[&rows], vec![]);
        let out = probe_name(name);
        if g.opset < 18 {
            let attrs = vec![crate::graph::attr_ints("axes", &[0]), attr_int("keepdims", 0)];
            g.node_to("ReduceMax", &[&abs], &out, attrs);
        } else {
            let axes = g.ints("axes", &[0]);
            g.node_to("ReduceMax", &[&abs, &axes], &out, vec![attr_int("keepdims", 0)]);
        }
        g.rec.probes.push((out, din));
    }
}

/// Symmetric per-output-channel int8 of `w` (`[dout, din]`, row-major), its columns first multiplied by `smooth`
/// and the columns in `skip` (outlier channels, computed in float32 instead) left at zero: returns the weight
/// transposed to `[din, dout]` (the `B` of `x · B`) and the `dout` scales.
pub fn quantize_weight(
    w: &[f32],
    dout: usize,
    din: usize,
    smooth: Option<&[f32]>,
    skip: &[usize],
) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; din * dout];
    let mut scales = Vec::with_capacity(dout);
    let mut row = vec![0f32; din];
    for o in 0..dout {
        for (i, r) in row.iter_mut().enumerate() {
            *r = w[o * din + i] * smooth.map_or(1.0, |s| s[i]);
        }
        for &i in skip {
            row[i] = 0.0;
        }
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() { max / 127.0 } else { 1.0 };
        for (i, r) in row.iter().enumerate() {
            q[i * dout + o] = (r / scale).round().clamp(-127.0, 127.0) as i8;
        }
        scales.push(scale);
    }
    (q, scales)
}

/// The weight `{prefix}.weight` (`[dout, din]`) as f32 values.
fn weight_values(g: &Graph<'_>, prefix: &str, din: usize, dout: usize) -> Result<Vec<f32>, GraphError> {
    let t = g.weights().get(&format!("{prefix}.weight"), &[dout, din])?;
    let bytes = t.converted_f32();
    let bytes = bytes.as_deref().unwrap_or(t.bytes);
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Writes the layer in int8 when the plan says so; `None` when it stays float.
pub(crate) fn int8_linear(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    din: usize,
    dout: usize,
    bias: bool,
) -> Result<Option<String>, GraphError> {
    let Some(plan) = g.plan() else { return Ok(None) };
    if !plan.int8.contains(prefix) {
        return Ok(None);
    }
    let form = plan.form;
    let smooth = plan.smooth.get(prefix).cloned();
    if let Some(s) = &smooth {
        if s.len() != din || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(GraphError::Options(format!(
                "SmoothQuant factors of `{prefix}`: {} values, {din} expected, all finite and positive",
                s.len()
            )));
        }
    }
    let outliers = plan.outliers.get(prefix).cloned().unwrap_or_default();
    if let Some(&bad) = outliers.iter().find(|&&i| i >= din) {
        return Err(GraphError::Options(format!("outlier channel {bad} of `{prefix}` is past its {din} inputs")));
    }
    let w = weight_values(g, prefix, din, dout)?;
    let (q, scales) = quantize_weight(&w, dout, din, smooth.as_deref(), &outliers);
    let (mut input, gathered) = match outliers.is_empty() {
        true => (x.to_string(), None),
        false => {
            let (masked, gathered) = split_outliers(g, x, prefix, din, &outliers);
            (masked, Some(gathered))
        }
    };
    if let Some(s) = &smooth {
        input = smoothed_input(g, &input, prefix, s);
    }
    let qb: Vec<u8> = q.iter().map(|v| *v as u8).collect();
    let wq = g.const_typed(&format!("{prefix}.weight_int8"), &[din as i64, dout as i64], INT8, qb);
    let ws = g.const_f32(&format!("{prefix}.weight_scale"), &[dout as i64], &scales);
    let b = if bias { Some(g.weight(&format!("{prefix}.bias"), &[dout])?) } else { None };
    let y = match form {
        Int8Form::Fused => {
            let out = g.names(&format!("{prefix}.int8"), 1).remove(0);
            let inputs = [input.as_str(), &wq, &ws, "", b.as_deref().unwrap_or("")];
            let n = if bias { 5 } else { 3 };
            g.node_outs("DynamicQuantizeMatMul", &inputs[..n], &[&out], vec![], "com.microsoft");
            g.rec.contrib = true;
            out
        }
        Int8Form::Standard => {
            let outs = g.names(&format!("{prefix}.xq"), 3);
            let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
            g.node_outs("DynamicQuantizeLinear", &[&input], &refs, vec![], "");
            let mm = g.node("MatMulInteger", &format!("{prefix}.matmul_int"), &[&outs[0], &wq, &outs[2]], vec![]);
            let f = g.node("Cast", &format!("{prefix}.matmul_f"), &[&mm], vec![attr_int("to", FLOAT)]);
            let scale = g.node("Mul", &format!("{prefix}.scale"), &[&outs[1], &ws], vec![]);
            let y = g.node("Mul", &format!("{prefix}.matmul"), &[&f, &scale], vec![]);
            match &b {
                Some(b) => g.node("Add", &format!("{prefix}.out"), &[&y, b], vec![]),
                None => y,
            }
        }
    };
    Ok(Some(match gathered {
        None => y,
        Some(gathered) => {
            // The outlier rows of the float32 weight, transposed: [outliers, dout].
            let mut rows = Vec::with_capacity(outliers.len() * dout);
            for &i in &outliers {
                rows.extend((0..dout).map(|o| w[o * din + i]));
            }
            let wo = g.const_f32(&format!("{prefix}.weight_outliers"), &[outliers.len() as i64, dout as i64], &rows);
            let fp = g.node("MatMul", &format!("{prefix}.outliers"), &[&gathered, &wo], vec![]);
            g.node("Add", &format!("{prefix}.mixed"), &[&y, &fp], vec![])
        }
    }))
}

/// `x` with its outlier channels zeroed, and those channels gathered (`[.., outliers]`), written once per activation.
fn split_outliers(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, outliers: &[usize]) -> (String, String) {
    if let Some(done) = g.rec.split.get(x) {
        return done.clone();
    }
    let mut keep = vec![1f32; din];
    for &i in outliers {
        keep[i] = 0.0;
    }
    let mask = g.const_f32(&format!("{prefix}.inlier_mask"), &[din as i64], &keep);
    let masked = g.node("Mul", &format!("{prefix}.inliers"), &[x, &mask], vec![]);
    let idx: Vec<i64> = outliers.iter().map(|&i| i as i64).collect();
    let idx = g.const_i64(&format!("{prefix}.outlier_index"), &[idx.len() as i64], &idx);
    let gathered = g.node("Gather", &format!("{prefix}.outlier_channels"), &[x, &idx], vec![attr_int("axis", -1)]);
    g.rec.split.insert(x.to_string(), (masked.clone(), gathered.clone()));
    (masked, gathered)
}

/// Input channels whose calibration maximum is at least `ratio` times the median channel's, the largest first, at
/// most `max_fraction` of the channels: the outliers one activation scale would be set by.
pub fn outlier_channels(act_absmax: &[f32], ratio: f32, max_fraction: f32) -> Vec<usize> {
    let mut sorted: Vec<f32> = act_absmax.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return vec![];
    }
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    if median <= 0.0 {
        return vec![];
    }
    let mut idx: Vec<usize> =
        (0..act_absmax.len()).filter(|&i| act_absmax[i].is_finite() && act_absmax[i] >= ratio * median).collect();
    idx.sort_by(|&a, &b| act_absmax[b].total_cmp(&act_absmax[a]));
    idx.truncate(((act_absmax.len() as f32 * max_fraction) as usize).max(1));
    idx.sort_unstable();
    idx
}

/// `x / s`, written once per activation.
fn smoothed_input(g: &mut Graph<'_>, x: &str, prefix: &str, s: &[f32]) -> String {
    if let Some(done) = g.rec.smoothed.get(x) {
        return done.clone();
    }
    let inv: Vec<f32> = s.iter().map(|v| 1.0 / v).collect();
    let c = g.const_f32(&format!("{prefix}.smooth_inv"), &[s.len() as i64], &inv);
    let out = g.node("Mul", &format!("{prefix}.smoothed"), &[x, &c], vec![]);
    g.rec.smoothed.insert(x.to_string(), out.clone());
    out
}

/// SmoothQuant factors for a group: `s_j = max|X_j|^α / max|W_·j|^(1-α)` over the group's weights, clamped to a
/// sane range (channels that never fire keep 1).
pub fn smooth_factors(act_absmax: &[f32], weight_colmax: &[f32], alpha: f32) -> Vec<f32> {
    act_absmax
        .iter()
        .zip(weight_colmax)
        .map(|(&a, &w)| {
            if a <= 0.0 || w <= 0.0 || !a.is_finite() || !w.is_finite() {
                return 1.0;
            }
            (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-3, 1e3)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_symmetric_round_trip() {
        // Two output channels of very different magnitude each get their own scale.
        let w = [1.0, -0.5, 0.25, 100.0, -50.0, 0.0];
        let (q, s) = quantize_weight(&w, 2, 3, None, &[]);
        assert_eq!(s, vec![1.0 / 127.0, 100.0 / 127.0]);
        // Transposed: q[i * dout + o].
        assert_eq!(q, vec![127, 127, -64, -64, 32, 0]);
        let (q2, s2) = quantize_weight(&w, 2, 3, Some(&[2.0, 1.0, 1.0]), &[]);
        assert_eq!((q2[0], s2[0]), (127, 2.0 / 127.0));
        let (_, s0) = quantize_weight(&[0.0; 3], 1, 3, None, &[]);
        assert_eq!(s0, vec![1.0]);
        // An outlier column is left out: the rest of the row sets the scale.
        let (q3, s3) = quantize_weight(&[1.0, 8.0, -0.5], 1, 3, None, &[1]);
        assert_eq!((q3, s3), (vec![127, 0, -64], vec![1.0 / 127.0]));
        assert_eq!(s0, vec![1.0]);
    }

    #[test]
    fn groups_by_shared_input_with_readable_names() {
        let l = |n: &str| LinearLayer { name: n.into(), din: 4, dout: 4 };
        let rec = vec![
            ("x1".to_string(), l("enc.0.attention.self.query")),
            ("x1".to_string(), l("enc.0.attention.self.key")),
            ("x1".to_string(), l("enc.0.attention.self.value")),
            ("x2".to_string(), l("enc.0.attention.output.dense")),
        ];
        let g = groups(&rec);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "enc.0.attention.self.{query,key,value}");
        assert_eq!(g[1].name, "enc.0.attention.output.dense");
        assert_eq!(g[0].params(), 48);
    }

    #[test]
    fn outliers_are_the_few_channels_far_above_the_median() {
        let mut a = vec![1.0f32; 64];
        a[3] = 40.0;
        a[10] = 7.0;
        a[20] = 5.0;
        assert_eq!(outlier_channels(&a, 6.0, 0.05), vec![3, 10]);
        // At most the fraction asked for, the largest first.
        assert_eq!(outlier_channels(&a, 6.0, 0.0), vec![3]);
        assert!(outlier_channels(&[0.0; 8], 6.0, 0.5).is_empty());
    }

    #[test]
    fn smooth_factors_balance_and_ignore_dead_channels() {
        let s = smooth_factors(&[16.0, 0.0, 1.0], &[1.0, 2.0, 4.0], 0.5);
        assert_eq!(s, vec![4.0, 1.0, 0.5]);
    }
}
