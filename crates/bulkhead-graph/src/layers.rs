//! The pieces every architecture is made of, written as ONNX nodes: linear layers (weights in Hugging Face layout
//! `[out, in]` behind a `Transpose` that ONNX Runtime constant-folds, so they can point into the safetensors file),
//! layer norms and RMS norms, activations, attention masks, attention, and rotary position embeddings.
//!
//! RMSNorm is written as `Pow(x, 2) → ReduceMean → Add(eps) → Sqrt → Div(x, ·) → Mul(weight)`, the pattern ONNX
//! Runtime's `SimplifiedLayerNormFusion` turns into `SimplifiedLayerNormalization`.

use crate::graph::{attr_float, attr_int, attr_ints, Graph, FLOAT};
use crate::GraphError;

/// The additive bias for masked attention scores. Large enough that `exp` gives exactly 0 after the softmax's max
/// subtraction, small enough that two of them added (padding and window or causal masks) stay finite.
pub(crate) const MASKED: f32 = -1.0e9;

/// `x @ W^T (+ b)` with `W` the weight `{prefix}.weight` of shape `[dout, din]` and, when `bias`, `{prefix}.bias`;
/// in int8 when the graph's plan names `prefix` (see [`quant`](crate::quant)).
pub(crate) fn linear(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    din: usize,
    dout: usize,
    bias: bool,
) -> Result<String, GraphError> {
    crate::quant::record(g, x, prefix, din, dout);
    if let Some(out) = crate::quant::int8_linear(g, x, prefix, din, dout, bias)? {
        return Ok(out);
    }
    let weight = g.weight(&format!("{prefix}.weight"), &[dout, din])?;
    let wt = g.node("Transpose", &format!("{prefix}.weight_t"), &[&weight], vec![attr_ints("perm", &[1, 0])]);
    let mm = g.node("MatMul", &format!("{prefix}.matmul"), &[x, &wt], vec![]);
    if !bias {
        return Ok(mm);
    }
    let b = g.weight(&format!("{prefix}.bias"), &[dout])?;
    Ok(g.node("Add", &format!("{prefix}.out"), &[&mm, &b], vec![]))
}

/// `LayerNormalization` over the last axis with `{prefix}.weight` and `{prefix}.bias` (zeros when `bias` is false).
pub(crate) fn layer_norm(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    h: usize,
    eps: f32,
    bias: bool,
) -> Result<String, GraphError> {
    let gamma = g.weight(&format!("{prefix}.weight"), &[h])?;
    let beta = if bias {
        g.weight(&format!("{prefix}.bias"), &[h])?
    } else {
        g.const_f32(&format!("zeros_{h}"), &[h as i64], &vec![0.0; h])
    };
    Ok(g.node(
        "LayerNormalization",
        "layer_norm",
        &[x, &gamma, &beta],
        vec![attr_int("axis", -1), attr_float("epsilon", eps)],
    ))
}

/// RMSNorm (`weight * x / sqrt(mean(x²) + eps)`) over the last axis, with the weight `name` of `h` elements.
pub(crate) fn rms_norm(g: &mut Graph<'_>, x: &str, name: &str, h: usize, eps: f32) -> Result<String, GraphError> {
    let w = g.weight(name, &[h])?;
    let two = g.scalar(2.0);
    let eps = g.scalar(eps);
    let sq = g.node("Pow", "rms_sq", &[x, &two], vec![]);
    let mean = g.reduce_mean_last(&sq, "rms_mean");
    let var = g.node("Add", "rms_var", &[&mean, &eps], vec![]);
    let rms = g.node("Sqrt", "rms", &[&var], vec![]);
    let normed = g.node("Div", "rms_normed", &[x, &rms], vec![]);
    Ok(g.node("Mul", "rms_out", &[&normed, &w], vec![]))
}

/// Exact (erf) GELU: `x · (1 + erf(x / √2)) · 0.5`, the form ONNX Runtime fuses into `Gelu`/`BiasGelu`.
pub(crate) fn gelu(g: &mut Graph<'_>, x: &str) -> String {
    let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
    let one = g.scalar(1.0);
    let half = g.scalar(0.5);
    let d = g.node("Div", "gelu_div", &[x, &sqrt2], vec![]);
    let e = g.node("Erf", "gelu_erf", &[&d], vec![]);
    let a = g.node("Add", "gelu_add", &[&e, &one], vec![]);
    let m = g.node("Mul", "gelu_mul", &[x, &a], vec![]);
    g.node("Mul", "gelu", &[&m, &half], vec![])
}

/// SiLU: `x · sigmoid(x)`.
pub(crate) fn silu(g: &mut Graph<'_>, x: &str) -> String {
    let s = g.node("Sigmoid", "silu_sigmoid", &[x], vec![]);
    g.node("Mul", "silu", &[x, &s], vec![])
}

/// The additive padding mask `(1 - mask) · MASKED`, shape `[batch, 1, 1, seq]`.
pub(crate) fn padding_bias(g: &mut Graph<'_>) -> String {
    let m = g.unsqueeze("attention_mask", &[1, 2], "mask_4d");
    let m = g.node("Cast", "mask_float", &[&m], vec![attr_int("to", FLOAT)]);
    let one = g.scalar(1.0);
    let inv = g.node("Sub", "mask_inverted", &[&one, &m], vec![]);
    let big = g.scalar(MASKED);
    g.node("Mul", "mask_bias", &[&inv, &big], vec![])
}

/// Positions `0..seq` (int64, `[seq]`) from the shape of `input_ids`.
pub(crate) fn positions(g: &mut Graph<'_>) -> String {
    let shape = g.node("Shape", "ids_shape", &["input_ids"], vec![]);
    let one = g.scalar_i64(1);
    let zero = g.scalar_i64(0);
    let seq = g.node("Gather", "seq_len", &[&shape, &one], vec![attr_int("axis", 0)]);
    g.node("Range", "positions", &[&zero, &seq, &one], vec![])
}

/// `[seq, seq]` additive bias that is `MASKED` where `keep(query i, key j)` is false: `Causal` masks `j > i`,
/// `Window(w)` masks `|i - j| > w`.
pub(crate) fn position_bias(g: &mut Graph<'_>, positions: &str, kind: PositionMask) -> String {
    let rows = g.unsqueeze(positions, &[1], "pos_rows");
    let cols = g.unsqueeze(positions, &[0], "pos_cols");
    let masked = match kind {
        PositionMask::Causal => g.node("Greater", "causal_masked", &[&cols, &rows], vec![]),
        PositionMask::Window(w) => {
            let diff = g.node("Sub", "pos_diff", &[&cols, &rows], vec![]);
            let dist = g.node("Abs", "pos_dist", &[&diff], vec![]);
            let w = g.scalar_i64(w as i64);
            g.node("Greater", "window_masked", &[&dist, &w], vec![])
        }
    };
    let f = g.node("Cast", "pos_mask_float", &[&masked], vec![attr_int("to", FLOAT)]);
    let big = g.scalar(MASKED);
    g.node("Mul", "pos_mask_bias", &[&f, &big], vec![])
}

/// A mask on key positions relative to query positions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PositionMask {
    /// A key after the query is masked (decoders).
    Causal,
    /// A key further than this many positions from the query is masked (sliding-window attention).
    Window(usize),
}

/// `[batch, seq, n·d]` → `[batch, n, seq, d]`.
pub(crate) fn split_heads(g: &mut Graph<'_>, x: &str, n: usize, d: usize) -> String {
    let shape = g.ints("shape_heads", &[0, 0, n as i64, d as i64]);
    let r = g.node("Reshape", "heads", &[x, &shape], vec![]);
    g.node("Transpose", "heads_t", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
}

/// The head layout of an attention block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` for grouped-query attention).
    pub kv_heads: usize,
    /// Features per head.
    pub d: usize,
}

impl Heads {
    /// `heads` heads of `d` features, as many for keys and values.
    pub fn mha(heads: usize, d: usize) -> Heads {
        Heads { heads, kv_heads: heads, d }
    }
}

/// Scaled (`1/√d`) dot-product attention on `[batch, heads, seq, d]` queries and `[batch, kv_heads, seq, d]` keys
/// and values (grouped-query attention when `kv_heads < heads`: each key/value head serves `heads / kv_heads` query
/// heads), with the additive `bias` broadcast to `[batch, heads, seq, seq]`; returns `[batch, seq, heads·d]`.
pub(crate) fn attention(g: &mut Graph<'_>, q: &str, k: &str, v: &str, bias: &str, shape: Heads) -> String {
    let Heads { heads, kv_heads, d } = shape;
    let scale = 1.0 / (d as f32).sqrt();
    let (k, v) = if kv_heads < heads {
        (repeat_kv(g, k, heads, kv_heads, d), repeat_kv(g, v, heads, kv_heads, d))
    } else {
        (k.to_string(), v.to_string())
    };
    let kt = g.node("Transpose", "k_t", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let scores = g.node("MatMul", "scores", &[q, &kt], vec![]);
    let scale = g.scalar(scale);
    let scores = g.node("Mul", "scores_scaled", &[&scores, &scale], vec![]);
    let scores = g.node("Add", "scores_masked", &[&scores, bias], vec![]);
    let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.node("MatMul", "context", &[&probs, &v], vec![]);
    let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let merge = g.ints("shape_merge", &[0, 0, (heads * d) as i64]);
    g.node("Reshape", "context_merged", &[&ctx, &merge], vec![])
}

/// `[batch, kv, seq, d]` → `[batch, kv·rep, seq, d]`, each head repeated `rep` times in place (as `repeat_kv` of
/// the Hugging Face decoders).
fn repeat_kv(g: &mut Graph<'_>, x: &str, heads: usize, kv: usize, d: usize) -> String {
    let rep = (heads / kv) as i64;
    let x5 = g.unsqueeze(x, &[2], "kv_5d");
    let shape = g.node("Shape", "kv_shape", &[x], vec![]);
    let b = g.slice(&shape, 0, 0, 1, "kv_b");
    let s = g.slice(&shape, 0, 2, 3, "kv_s");
    let kv_c = g.ints("kv_heads", &[kv as i64]);
    let rep_c = g.ints("kv_rep", &[rep]);
    let d_c = g.ints("kv_d", &[d as i64]);
    let target = g.node("Concat", "kv_target", &[&b, &kv_c, &rep_c, &s, &d_c], vec![attr_int("axis", 0)]);
    let e = g.node("Expand", "kv_expanded", &[&x5, &target], vec![]);
    let h_c = g.ints("kv_all_heads", &[heads as i64]);
    let merged = g.node("Concat", "kv_merged_shape", &[&b, &h_c, &s, &d_c], vec![attr_int("axis", 0)]);
    g.node("Reshape", "kv_repeated", &[&e, &merged], vec![])
}

/// Rotary position embedding tables for positions `0..seq`: `(cos, sin)`, each `[seq, rotary_dim]`, from the
/// inverse frequencies (`rotary_dim / 2` of them) as `cat(freqs, freqs)` (the non-interleaved, GPT-NeoX layout).
pub(crate) fn rotary_tables(g: &mut Graph<'_>, positions: &str, inv_freq: &[f32], hint: &str) -> (String, String) {
    let n = inv_freq.len() as i64;
    let inv = g.const_f32(&format!("{hint}_inv_freq"), &[1, n], inv_freq);
    let p = g.node("Cast", "pos_float", &[positions], vec![attr_int("to", FLOAT)]);
    let p = g.unsqueeze(&p, &[1], "pos_col");
    let freqs = g.node("Mul", "freqs", &[&p, &inv], vec![]);
    let emb = g.node("Concat", "freqs_emb", &[&freqs, &freqs], vec![attr_int("axis", -1)]);
    let cos = g.node("Cos", &format!("{hint}_cos"), &[&emb], vec![]);
    let sin = g.node("Sin", &format!("{hint}_sin"), &[&emb], vec![]);
    (cos, sin)
}

/// `1 / base^(2i / dim)` for `i < dim / 2`, computed in f64 and rounded once.
pub(crate) fn inv_freq(base: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2).map(|i| (1.0 / base.powf((2 * i) as f64 / dim as f64)) as f32).collect()
}

/// Applies the rotary embedding to `x` (`[batch, heads, seq, d]`) with `[seq, rotary_dim]` tables:
/// `x·cos + rotate_half(x)·sin` on the first `rotary_dim` features, the rest unchanged.
pub(crate) fn apply_rotary(g: &mut Graph<'_>, x: &str, cos: &str, sin: &str, d: usize, rotary_dim: usize) -> String {
    let (rot, pass) = if rotary_dim < d {
        let parts = g.split(x, -1, &[rotary_dim as i64, (d - rotary_dim) as i64], "rot_split");
        (parts[0].clone(), Some(parts[1].clone()))
    } else {
        (x.to_string(), None)
    };
    let half = (rotary_dim / 2) as i64;
    let halves = g.split(&rot, -1, &[half, half], "rot_halves");
    let neg = g.node("Neg", "rot_neg", &[&halves[1]], vec![]);
    let rotated = g.node("Concat", "rot_half", &[&neg, &halves[0]], vec![attr_int("axis", -1)]);
    let a = g.node("Mul", "rot_cos", &[&rot, cos], vec![]);
    let b = g.node("Mul", "rot_sin", &[&rotated, sin], vec![]);
    let out = g.node("Add", "rotated", &[&a, &b], vec![]);
    match pass {
        None => out,
        Some(p) => g.node("Concat", "rot_joined", &[&out, &p], vec![attr_int("axis", -1)]),
    }
}

/// Token embeddings: `Gather(table, input_ids)` with the table `name` of shape `[vocab, h]`.
pub(crate) fn embed(g: &mut Graph<'_>, name: &str, vocab: usize, h: usize, ids: &str) -> Result<String, GraphError> {
    let table = g.weight(name, &[vocab, h])?;
    Ok(g.node("Gather", "embed", &[&table, ids], vec![]))
}
