//! SAM2's vision encoder: the Hiera backbone (patch embedding, windowed positional embedding, multi-scale blocks
//! with window partitions and query pooling, global-attention blocks), the FPN neck (lateral convolutions, top-down
//! nearest upsampling) and the three image embeddings the mask decoder reads (`conv_s0`, `conv_s1`, the no-memory
//! embedding). Hidden states stay channels-last (`[1, H, W, C]`) as in transformers; every shape is static.

use crate::graph::{attr_int, attr_ints, attr_str, Dim, Graph, Io, FLOAT};
use crate::layers::{gelu, layer_norm, linear};
use crate::GraphError;

use super::{values, Sam2Config, IMAGE_EMBEDDINGS};

const BB: &str = "vision_encoder.backbone";

/// Writes the encoder; returns its inputs and outputs.
pub(crate) fn build(g: &mut Graph<'_>, c: &Sam2Config) -> Result<(Vec<Io>, Vec<Io>), GraphError> {
    let s = c.image_size;
    let hidden = c.dims[0];
    let k = c.patch_kernel;
    let w = g.weight(&format!("{BB}.patch_embed.projection.weight"), &[hidden, c.channels, k, k])?;
    let bias = g.weight(&format!("{BB}.patch_embed.projection.bias"), &[hidden])?;
    let p = c.patch_padding as i64;
    let conv = g.node(
        "Conv",
        "patch_embed",
        &["pixel_values", &w, &bias],
        vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[c.patch_stride as i64; 2]),
            attr_ints("pads", &[p, p, p, p]),
        ],
    );
    let side = (s + 2 * c.patch_padding).checked_sub(k).map(|n| n / c.patch_stride + 1).unwrap_or(0);
    if side == 0 {
        return Err(GraphError::Config {
            path: c.path.clone(),
            reason: format!("`vision_config.backbone_config.image_size` {s} is smaller than the patch kernel {k}"),
        });
    }
    let x = g.node("Transpose", "patch_nhwc", &[&conv], vec![attr_ints("perm", &[0, 2, 3, 1])]);
    let pos = positional_embedding(g, c, hidden, side)?;
    let pos = g.const_f32("hiera_pos_embed", &[1, side as i64, side as i64, hidden as i64], &pos);
    let mut x = g.node("Add", "patch_pos", &[&x, &pos], vec![]);

    // The blocks; `stages[i]` is the output of stage i and its side.
    let mut stages = vec![];
    let mut side = side;
    let mut total = 0;
    for stage in 0..c.blocks.len() {
        for b in 0..c.blocks[stage] {
            let first = stage > 0 && b == 0;
            let dim = if first { c.dims[stage - 1] } else { c.dims[stage] };
            let window = if first { c.windows[stage - 1] } else { c.windows[stage] };
            let block = Block {
                index: total,
                dim,
                dim_out: c.dims[stage],
                heads: c.heads[stage],
                window: if c.global_blocks.contains(&total) { 0 } else { window },
                query_stride: (first && stage <= c.query_pool_stages).then_some(c.query_stride),
            };
            (x, side) = block.build(g, c, &x, side)?;
            total += 1;
        }
        stages.push((x.clone(), side));
    }

    // The neck, from the lowest resolution up; `levels[i]` is the FPN output of stage i.
    let n = stages.len() - 1;
    let f = c.fpn_hidden;
    let mut levels = vec![String::new(); n + 1];
    let mut prev = String::new();
    for i in (0..=n).rev() {
        let (hs, _) = &stages[i];
        let nchw = g.node("Transpose", "neck_nchw", &[hs], vec![attr_ints("perm", &[0, 3, 1, 2])]);
        let name = format!("vision_encoder.neck.convs.{}", n - i);
        let kk = c.fpn_kernel;
        let w = g.weight(&format!("{name}.weight"), &[f, c.dims[i], kk, kk])?;
        let b = g.weight(&format!("{name}.bias"), &[f])?;
        let pd = c.fpn_padding as i64;
        let lateral = g.node(
            "Conv",
            "neck_lateral",
            &[&nchw, &w, &b],
            vec![
                attr_ints("kernel_shape", &[kk as i64; 2]),
                attr_ints("strides", &[c.fpn_stride as i64; 2]),
                attr_ints("pads", &[pd; 4]),
            ],
        );
        prev = if !c.top_down.contains(&i) || i == n {
            lateral
        } else {
            let scales = g.const_f32("scales_up2", &[4], &[1.0, 1.0, 2.0, 2.0]);
            let up = g.node(
                "Resize",
                "neck_top_down",
                &[&prev, "", &scales],
                vec![
                    attr_str("mode", "nearest"),
                    attr_str("coordinate_transformation_mode", "asymmetric"),
                    attr_str("nearest_mode", "floor"),
                ],
            );
            g.node("Add", "neck_sum", &[&lateral, &up], vec![])
        };
        levels[i] = prev.clone();
    }

    // What the decoder reads: conv_s0 / conv_s1 of the two highest resolutions, the no-memory embedding added to
    // the third.
    let sides: Vec<usize> = stages.iter().map(|(_, s)| *s).collect();
    let embedding = c.embedding_side();
    if sides[..3] != [embedding * 4, embedding * 2, embedding] || c.feature_sizes[..] != sides[..3] {
        return Err(GraphError::Config {
            path: c.path.clone(),
            reason: format!(
                "the backbone's first three stages are {:?} wide, `vision_config.backbone_feature_sizes` says {:?} \
                 and the prompt encoder's `image_size / patch_size` implies {:?}: the sizes must agree",
                &sides[..3],
                c.feature_sizes,
                [embedding * 4, embedding * 2, embedding]
            ),
        });
    }
    let s0 = conv1x1(g, &levels[0], "mask_decoder.conv_s0", f, f / 8)?;
    g.node_to("Identity", &[&s0], IMAGE_EMBEDDINGS[0], vec![]);
    let s1 = conv1x1(g, &levels[1], "mask_decoder.conv_s1", f, f / 4)?;
    g.node_to("Identity", &[&s1], IMAGE_EMBEDDINGS[1], vec![]);
    let no_mem = g.weight("no_memory_embedding", &[1, 1, f])?;
    let shape = g.ints("no_mem_shape", &[1, f as i64, 1, 1]);
    let no_mem = g.node("Reshape", "no_mem_nchw", &[&no_mem, &shape], vec![]);
    g.node_to("Add", &[&levels[2], &no_mem], IMAGE_EMBEDDINGS[2], vec![]);

    let fixed = |d: &[usize]| d.iter().map(|&n| Dim::Fixed(n)).collect::<Vec<_>>();
    let inputs = vec![Io::new("pixel_values", FLOAT, fixed(&[1, c.channels, s, s]))];
    let outputs = vec![
        Io::new(IMAGE_EMBEDDINGS[0], FLOAT, fixed(&[1, f / 8, sides[0], sides[0]])),
        Io::new(IMAGE_EMBEDDINGS[1], FLOAT, fixed(&[1, f / 4, sides[1], sides[1]])),
        Io::new(IMAGE_EMBEDDINGS[2], FLOAT, fixed(&[1, f, sides[2], sides[2]])),
    ];
    Ok((inputs, outputs))
}

/// A 1×1 convolution `{prefix}.weight` `[dout, din, 1, 1]` + `{prefix}.bias` on an NCHW tensor.
pub(crate) fn conv1x1(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String, GraphError> {
    let w = g.weight(&format!("{prefix}.weight"), &[dout, din, 1, 1])?;
    let b = g.weight(&format!("{prefix}.bias"), &[dout])?;
    Ok(g.node("Conv", "conv1x1", &[x, &w, &b], vec![attr_ints("kernel_shape", &[1, 1])]))
}

/// One multi-scale block of Hiera.
struct Block {
    index: usize,
    dim: usize,
    dim_out: usize,
    heads: usize,
    /// 0 for global attention.
    window: usize,
    query_stride: Option<usize>,
}

impl Block {
    /// `x` is `[1, side, side, dim]`; returns `[1, side', side', dim_out]` and `side'`.
    fn build(&self, g: &mut Graph<'_>, c: &Sam2Config, x: &str, side: usize) -> Result<(String, usize), GraphError> {
        let p = format!("{BB}.blocks.{}", self.index);
        let (dim, dim_out) = (self.dim, self.dim_out);
        let ln = layer_norm(g, x, &format!("{p}.layer_norm1"), dim, c.backbone_eps, true)?;
        let out_side = self.query_stride.map_or(side, |q| side / q);
        let residual = if dim != dim_out {
            let r = linear(g, &ln, &format!("{p}.proj"), dim, dim_out, true)?;
            match self.query_stride {
                Some(q) => max_pool(g, &r, q),
                None => r,
            }
        } else if self.query_stride.is_some() {
            return Err(GraphError::Unsupported {
                path: c.path.clone(),
                reason: format!(
                    "block {}: query pooling between stages of equal width ({dim}) is not defined by the reference",
                    self.index
                ),
            });
        } else {
            x.to_string()
        };
        let attn = if self.window > 0 {
            let ws = self.window;
            let (windows, n) = partition(g, &ln, side, ws, dim);
            let out = self.attention(g, &windows, &p, n, ws)?;
            let ws_out = self.query_stride.map_or(ws, |q| ws / q);
            if ws_out == 0 || out_side.div_ceil(ws_out) != side.div_ceil(ws) {
                return Err(GraphError::Unsupported {
                    path: c.path.clone(),
                    reason: format!(
                        "block {}: windows of {ws} on a {side}-wide grid do not pool into windows of {ws_out} on \
                         {out_side} (transformers fails on this configuration too)",
                        self.index
                    ),
                });
            }
            unpartition(g, &out, out_side, ws_out, dim_out)
        } else {
            self.attention(g, &ln, &p, 1, side)?
        };
        let x = g.node("Add", "block_attn_residual", &[&residual, &attn], vec![]);
        let ln2 = layer_norm(g, &x, &format!("{p}.layer_norm2"), dim_out, c.backbone_eps, true)?;
        let inner = (dim_out as f64 * c.mlp_ratio) as usize;
        let h = linear(g, &ln2, &format!("{p}.mlp.proj_in"), dim_out, inner, true)?;
        let h = gelu(g, &h);
        let h = linear(g, &h, &format!("{p}.mlp.proj_out"), inner, dim_out, true)?;
        Ok((g.node("Add", "block_out", &[&x, &h], vec![]), out_side))
    }

    /// Multi-scale attention on `n` windows `[n, ws, ws, dim]` (the queries max-pooled by the query stride);
    /// returns `[n, ws', ws', dim_out]`.
    fn attention(&self, g: &mut Graph<'_>, x: &str, p: &str, n: usize, ws: usize) -> Result<String, GraphError> {
        let (dim_out, heads) = (self.dim_out, self.heads);
        let hd = dim_out / heads;
        let qkv = linear(g, x, &format!("{p}.attn.qkv"), self.dim, 3 * dim_out, true)?;
        let (n_, l_, h_, d_) = (n as i64, (ws * ws) as i64, heads as i64, hd as i64);
        let shape = g.ints("qkv_shape", &[n_, l_, 3, h_, d_]);
        let qkv = g.node("Reshape", "qkv_split_heads", &[&qkv, &shape], vec![]);
        let parts = g.split(&qkv, 2, &[1, 1, 1], "qkv_parts");
        let mut q = g.squeeze(&parts[0], &[2], "q");
        let k = g.squeeze(&parts[1], &[2], "k");
        let v = g.squeeze(&parts[2], &[2], "v");
        let mut wo = ws;
        if let Some(stride) = self.query_stride {
            let grid = g.ints("q_grid", &[n_, ws as i64, ws as i64, dim_out as i64]);
            let q4 = g.node("Reshape", "q_grid", &[&q, &grid], vec![]);
            let pooled = max_pool(g, &q4, stride);
            wo = ws / stride;
            let back = g.ints("q_heads", &[n_, (wo * wo) as i64, h_, d_]);
            q = g.node("Reshape", "q_pooled", &[&pooled, &back], vec![]);
        }
        let perm = || vec![attr_ints("perm", &[0, 2, 1, 3])];
        let q = g.node("Transpose", "q_t", &[&q], perm());
        let kt = g.node("Transpose", "k_t", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.node("Transpose", "v_t", &[&v], perm());
        let scores = g.node("MatMul", "scores", &[&q, &kt], vec![]);
        let scale = g.scalar((hd as f32).powf(-0.5));
        let scores = g.node("Mul", "scores_scaled", &[&scores, &scale], vec![]);
        let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = g.node("MatMul", "context", &[&probs, &v], vec![]);
        let ctx = g.node("Transpose", "context_t", &[&ctx], perm());
        let shape = g.ints("context_grid", &[n_, wo as i64, wo as i64, dim_out as i64]);
        let ctx = g.node("Reshape", "context_grid", &[&ctx, &shape], vec![]);
        linear(g, &ctx, &format!("{p}.attn.proj"), dim_out, dim_out, true)
    }
}

/// `[b, h, w, c]` → max-pooled by `q` (kernel and stride `q`, floor), channels-last kept.
fn max_pool(g: &mut Graph<'_>, x: &str, q: usize) -> String {
    let nchw = g.node("Transpose", "pool_nchw", &[x], vec![attr_ints("perm", &[0, 3, 1, 2])]);
    let q = q as i64;
    let pooled =
        g.node("MaxPool", "pool", &[&nchw], vec![attr_ints("kernel_shape", &[q, q]), attr_ints("strides", &[q, q])]);
    g.node("Transpose", "pool_nhwc", &[&pooled], vec![attr_ints("perm", &[0, 2, 3, 1])])
}

/// `[1, side, side, c]` → `[n, ws, ws, c]` windows (zero padding at the bottom and right when `ws` does not divide
/// `side`); returns the windows and `n`.
fn partition(g: &mut Graph<'_>, x: &str, side: usize, ws: usize, c: usize) -> (String, usize) {
    let pad = (ws - side % ws) % ws;
    let x = if pad > 0 {
        let pads = g.ints("window_pads", &[0, 0, 0, 0, 0, pad as i64, pad as i64, 0]);
        g.node("Pad", "window_pad", &[x, &pads], vec![])
    } else {
        x.to_string()
    };
    let nw = (side + pad) / ws;
    let (nw_, ws_, c_) = (nw as i64, ws as i64, c as i64);
    let shape = g.ints("window_split", &[1, nw_, ws_, nw_, ws_, c_]);
    let r = g.node("Reshape", "window_split", &[&x, &shape], vec![]);
    let t = g.node("Transpose", "window_order", &[&r], vec![attr_ints("perm", &[0, 1, 3, 2, 4, 5])]);
    let shape = g.ints("windows", &[nw_ * nw_, ws_, ws_, c_]);
    (g.node("Reshape", "windows", &[&t, &shape], vec![]), nw * nw)
}

/// `[n, ws, ws, c]` windows → `[1, side, side, c]`, the padding cut off.
fn unpartition(g: &mut Graph<'_>, x: &str, side: usize, ws: usize, c: usize) -> String {
    let nw = side.div_ceil(ws);
    let (nw_, ws_, c_) = (nw as i64, ws as i64, c as i64);
    let shape = g.ints("window_grid", &[1, nw_, nw_, ws_, ws_, c_]);
    let r = g.node("Reshape", "window_grid", &[x, &shape], vec![]);
    let t = g.node("Transpose", "window_unorder", &[&r], vec![attr_ints("perm", &[0, 1, 3, 2, 4, 5])]);
    let shape = g.ints("window_merged", &[1, nw_ * ws_, nw_ * ws_, c_]);
    let m = g.node("Reshape", "window_merged", &[&t, &shape], vec![]);
    if nw * ws == side {
        return m;
    }
    let m = g.slice(&m, 1, 0, side as i64, "window_crop_h");
    g.slice(&m, 2, 0, side as i64, "window_crop_w")
}

/// The windowed positional embedding `[side, side, hidden]` (channels-last): `pos_embed` resized bicubically to
/// `side × side`, plus `pos_embed_window` tiled.
fn positional_embedding(g: &Graph<'_>, c: &Sam2Config, hidden: usize, side: usize) -> Result<Vec<f32>, GraphError> {
    let [bh, bw] = c.background;
    let ws = c.windows[0];
    let bg = values(g.weights(), &format!("{BB}.pos_embed"), &[1, hidden, bh, bw])?;
    let win = values(g.weights(), &format!("{BB}.pos_embed_window"), &[1, hidden, ws, ws])?;
    if !side.is_multiple_of(ws) {
        return Err(GraphError::Unsupported {
            path: c.path.clone(),
            reason: format!(
                "the first stage is {side} wide, not a multiple of its window {ws}: the window positional embedding \
                 cannot be tiled (transformers fails too)"
            ),
        });
    }
    let resized = bicubic(&bg, hidden, bh, bw, side, side);
    let mut out = vec![0f32; side * side * hidden];
    for ch in 0..hidden {
        for y in 0..side {
            for x in 0..side {
                let v = resized[(ch * side + y) * side + x] + win[(ch * ws + y % ws) * ws + x % ws];
                out[(y * side + x) * hidden + ch] = v;
            }
        }
    }
    Ok(out)
}

/// `torch.nn.functional.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False)` of a `[1, c, ih, iw]`
/// tensor, computed in float32 as torch's CPU kernel does: source index `(dst + 0.5) · in/out − 0.5`, Keys' cubic
/// convolution with `A = −0.75`, neighbours clamped to the border.
pub(crate) fn bicubic(x: &[f32], c: usize, ih: usize, iw: usize, oh: usize, ow: usize) -> Vec<f32> {
    fn weights(dst: usize, input: usize, output: usize) -> ([usize; 4], [f32; 4]) {
        const A: f32 = -0.75;
        let scale = input as f32 / output as f32;
        let real = scale * (dst as f32 + 0.5) - 0.5;
        let floor = real.floor();
        let t = real - floor;
        let cc1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let cc2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        let w = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
        let base = floor as i64;
        let idx = [0, 1, 2, 3].map(|j| (base - 1 + j).clamp(0, input as i64 - 1) as usize);
        (idx, w)
    }
    let mut out = vec![0f32; c * oh * ow];
    for oy in 0..oh {
        let (yi, yw) = weights(oy, ih, oh);
        for ox in 0..ow {
            let (xi, xw) = weights(ox, iw, ow);
            for ch in 0..c {
                let plane = &x[ch * ih * iw..(ch + 1) * ih * iw];
                let row = |y: usize| {
                    let r = &plane[y * iw..(y + 1) * iw];
                    r[xi[0]] * xw[0] + r[xi[1]] * xw[1] + r[xi[2]] * xw[2] + r[xi[3]] * xw[3]
                };
                out[(ch * oh + oy) * ow + ox] =
                    row(yi[0]) * yw[0] + row(yi[1]) * yw[1] + row(yi[2]) * yw[2] + row(yi[3]) * yw[3];
            }
        }
    }
    out
}
