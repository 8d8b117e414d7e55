//! SAM2's prompt encoder and mask decoder as one graph: random-Fourier positional encoding of points and box
//! corners with their label embeddings (not-a-point and padding rules as transformers applies them), the dense
//! embedding of an earlier mask (or `no_mask_embed`), the two-way transformer (token-to-image and image-to-token
//! attention at the configured downsample rate), mask upscaling with the high-resolution skip features, the
//! hypernetwork MLPs, the IoU and object-score heads, and both answers of `multimask_output` (for `false`, the
//! dynamic selection via stability score of `Sam2MaskDecoder`). Tokens are `[T, C]` and image keys `[HW, C]`: batch
//! and point batch are 1.

use crate::graph::{attr_int, attr_ints, Dim, Graph, Io, FLOAT, INT64};
use crate::layers::{gelu, layer_norm, linear};
use crate::GraphError;

use super::{Sam2Config, IMAGE_EMBEDDINGS};

const PE: &str = "prompt_encoder";
const MD: &str = "mask_decoder";
/// `nn.LayerNorm`'s default epsilon, which the two-way transformer's norms keep.
const TRANSFORMER_EPS: f32 = 1e-5;
/// `Sam2LayerNorm`'s default epsilon (the upscaling norm).
const UPSCALE_EPS: f32 = 1e-6;

/// Writes the prompt encoder and mask decoder; returns the graph's inputs and outputs.
pub(crate) fn build(g: &mut Graph<'_>, c: &Sam2Config) -> Result<(Vec<Io>, Vec<Io>), GraphError> {
    let ch = c.decoder_hidden;
    let e = c.embedding_side();
    let size = c.image_size as f32;
    let k = c.multimask_outputs;
    let masks_n = k + 1;

    // Sparse prompt: points, box corners, one not-a-point token.
    let pe = g.weight(&format!("{PE}.shared_embedding.positional_embedding"), &[2, ch / 2])?;
    let half = g.scalar(0.5);
    let size_c = g.scalar(size);
    let points = g.node("Add", "points_centered", &["input_points", &half], vec![]);
    let points = g.node("Div", "points_unit", &[&points, &size_c], vec![]);
    let points = fourier(g, &points, &pe);
    let labels = g.unsqueeze("input_labels", &[-1], "labels");
    let nap = g.weight(&format!("{PE}.not_a_point_embed.weight"), &[1, ch])?;
    let minus1 = g.scalar_i64(-1);
    let is_nap = g.node("Equal", "label_nap", &[&labels, &minus1], vec![]);
    let points = g.node("Where", "points_nap", &[&is_nap, &nap, &points], vec![]);
    let minus10 = g.scalar_i64(-10);
    let is_pad = g.node("Equal", "label_pad", &[&labels, &minus10], vec![]);
    let zero = g.scalar(0.0);
    let points = g.node("Where", "points_pad", &[&is_pad, &zero, &points], vec![]);
    let point_embed = g.weight(&format!("{PE}.point_embed.weight"), &[c.point_embeddings, ch])?;
    let zero_i = g.scalar_i64(0);
    let clamped = g.node("Max", "labels_clamped", &["input_labels", &zero_i], vec![]);
    let label_embed = g.node("Gather", "label_embed", &[&point_embed, &clamped], vec![attr_int("axis", 0)]);
    let real = g.node("GreaterOrEqual", "label_real", &[&labels, &zero_i], vec![]);
    let real = g.node("Cast", "label_real_f", &[&real], vec![attr_int("to", FLOAT)]);
    let label_embed = g.node("Mul", "label_embed_kept", &[&label_embed, &real], vec![]);
    let points = g.node("Add", "points_embedded", &[&points, &label_embed], vec![]);

    let boxes = g.node("Add", "boxes_centered", &["input_boxes", &half], vec![]);
    let corner_shape = g.ints("corner_shape", &[1, -1, 2, 2]);
    let corners = g.node("Reshape", "box_corners", &[&boxes, &corner_shape], vec![]);
    let corners = g.node("Div", "corners_unit", &[&corners, &size_c], vec![]);
    let corners = fourier(g, &corners, &pe);
    let corner_ids = g.ints("corner_ids", &[2, 3]);
    let corner_embed = g.node("Gather", "corner_embed", &[&point_embed, &corner_ids], vec![attr_int("axis", 0)]);
    let corners = g.node("Add", "corners_embedded", &[&corners, &corner_embed], vec![]);
    let flat = g.ints("token_rows", &[-1, ch as i64]);
    let points = g.node("Reshape", "point_tokens", &[&points, &flat], vec![]);
    let corners = g.node("Reshape", "corner_tokens", &[&corners, &flat], vec![]);

    let obj = g.weight(&format!("{MD}.obj_score_token.weight"), &[1, ch])?;
    let iou = g.weight(&format!("{MD}.iou_token.weight"), &[1, ch])?;
    let mask_tokens = g.weight(&format!("{MD}.mask_tokens.weight"), &[masks_n, ch])?;
    let tokens =
        g.node("Concat", "tokens", &[&obj, &iou, &mask_tokens, &points, &corners, &nap], vec![attr_int("axis", 0)]);

    // Dense prompt: the earlier mask's embedding where `has_mask_input` is 1, `no_mask_embed` where it is 0.
    let dense_mask = mask_embedding(g, c)?;
    let no_mask = g.weight(&format!("{PE}.no_mask_embed.weight"), &[1, ch])?;
    let nchw = g.ints("channel_vector", &[1, ch as i64, 1, 1]);
    let no_mask = g.node("Reshape", "no_mask_nchw", &[&no_mask, &nchw], vec![]);
    let one = g.scalar(1.0);
    let without = g.node("Sub", "has_no_mask", &[&one, "has_mask_input"], vec![]);
    let a = g.node("Mul", "dense_from_mask", &[&dense_mask, "has_mask_input"], vec![]);
    let b = g.node("Mul", "dense_no_mask", &[&no_mask, &without], vec![]);
    let dense = g.node("Add", "dense", &[&a, &b], vec![]);
    let image = g.node("Add", "image_dense", &[IMAGE_EMBEDDINGS[2], &dense], vec![]);
    let rows = g.ints("image_rows", &[ch as i64, (e * e) as i64]);
    let image = g.node("Reshape", "image_flat", &[&image, &rows], vec![]);
    let keys = g.node("Transpose", "image_keys", &[&image], vec![attr_ints("perm", &[1, 0])]);

    // The image-wide positional encoding of the embedding grid's cell centres.
    let grid: Vec<f32> =
        (0..e * e).flat_map(|i| [((i % e) as f32 + 0.5) / e as f32, ((i / e) as f32 + 0.5) / e as f32]).collect();
    let grid = g.const_f32("image_grid", &[(e * e) as i64, 2], &grid);
    let image_pe = g.weight("shared_image_embedding.positional_embedding", &[2, ch / 2])?;
    let key_pe = fourier(g, &grid, &image_pe);

    let (queries, keys) = two_way_transformer(g, c, &tokens, &keys, &key_pe)?;

    // Mask upscaling with the high-resolution features.
    let t = g.node("Transpose", "keys_t", &[&keys], vec![attr_ints("perm", &[1, 0])]);
    let shape = g.ints("image_grid_shape", &[1, ch as i64, e as i64, e as i64]);
    let image = g.node("Reshape", "image_nchw", &[&t, &shape], vec![]);
    let up = conv_transpose(g, &image, &format!("{MD}.upscale_conv1"), ch, ch / 4)?;
    let up = g.node("Add", "up_s1", &[&up, IMAGE_EMBEDDINGS[1]], vec![]);
    let up = channels_first_norm(g, &up, &format!("{MD}.upscale_layer_norm"), ch / 4, UPSCALE_EPS)?;
    let up = gelu(g, &up);
    let up = conv_transpose(g, &up, &format!("{MD}.upscale_conv2"), ch / 4, ch / 8)?;
    let up = g.node("Add", "up_s0", &[&up, IMAGE_EMBEDDINGS[0]], vec![]);
    let up = gelu(g, &up);
    let side = 4 * e;
    let shape = g.ints("upscaled_rows", &[(ch / 8) as i64, (side * side) as i64]);
    let up = g.node("Reshape", "upscaled_rows", &[&up, &shape], vec![]);

    let mut hyper = vec![];
    for i in 0..masks_n {
        let token = g.slice(&queries, 0, 2 + i as i64, 3 + i as i64, "mask_token");
        let p = format!("{MD}.output_hypernetworks_mlps.{i}");
        hyper.push(feed_forward(g, &token, &p, [ch, ch, ch / 8], 3, false)?);
    }
    let refs: Vec<&str> = hyper.iter().map(String::as_str).collect();
    let hyper = g.node("Concat", "hyper_in", &refs, vec![attr_int("axis", 0)]);
    let masks = g.node("MatMul", "masks_flat", &[&hyper, &up], vec![]);
    let shape = g.ints("masks_shape", &[1, 1, masks_n as i64, side as i64, side as i64]);
    let masks = g.node("Reshape", "masks", &[&masks, &shape], vec![]);
    let iou_token = g.slice(&queries, 0, 1, 2, "iou_token_out");
    let iou_p = format!("{MD}.iou_prediction_head");
    let iou = feed_forward(g, &iou_token, &iou_p, [ch, c.iou_hidden, masks_n], c.iou_depth, true)?;
    let shape = g.ints("iou_shape", &[1, 1, masks_n as i64]);
    let iou = g.node("Reshape", "iou", &[&iou, &shape], vec![]);
    let obj_token = g.slice(&queries, 0, 0, 1, "obj_token_out");
    let obj = feed_forward(g, &obj_token, &format!("{MD}.pred_obj_score_head"), [ch, ch, 1], 3, false)?;
    let shape = g.ints("obj_shape", &[1, 1, 1]);
    g.node_to("Reshape", &[&obj, &shape], "object_score_logits", vec![]);

    let multi_masks = g.slice(&masks, 2, 1, masks_n as i64, "multi_masks");
    let multi_iou = g.slice(&iou, 2, 1, masks_n as i64, "multi_iou");
    g.node_to("Identity", &[&multi_masks], "pred_masks", vec![]);
    g.node_to("Identity", &[&multi_iou], "iou_scores", vec![]);
    let m0 = g.slice(&masks, 2, 0, 1, "single_mask");
    let i0 = g.slice(&iou, 2, 0, 1, "single_iou");
    let (m0, i0) =
        if c.dynamic_multimask { dynamic_selection(g, c, &m0, &i0, &multi_masks, &multi_iou) } else { (m0, i0) };
    g.node_to("Identity", &[&m0], "single_pred_masks", vec![]);
    g.node_to("Identity", &[&i0], "single_iou_scores", vec![]);

    let fixed = |d: &[usize]| d.iter().map(|&n| Dim::Fixed(n)).collect::<Vec<_>>();
    let one_ = Dim::Fixed(1);
    let inputs = vec![
        Io::new(IMAGE_EMBEDDINGS[0], FLOAT, fixed(&[1, ch / 8, 4 * e, 4 * e])),
        Io::new(IMAGE_EMBEDDINGS[1], FLOAT, fixed(&[1, ch / 4, 2 * e, 2 * e])),
        Io::new(IMAGE_EMBEDDINGS[2], FLOAT, fixed(&[1, ch, e, e])),
        Io::new("input_points", FLOAT, vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Named("num_points"), Dim::Fixed(2)]),
        Io::new("input_labels", INT64, vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Named("num_points")]),
        Io::new("input_boxes", FLOAT, vec![Dim::Fixed(1), Dim::Named("num_boxes"), Dim::Fixed(4)]),
        Io::new("input_masks", FLOAT, fixed(&[1, 1, side, side])),
        Io::new("has_mask_input", FLOAT, vec![one_]),
    ];
    let outputs = vec![
        Io::new("iou_scores", FLOAT, fixed(&[1, 1, k])),
        Io::new("pred_masks", FLOAT, fixed(&[1, 1, k, side, side])),
        Io::new("single_iou_scores", FLOAT, fixed(&[1, 1, 1])),
        Io::new("single_pred_masks", FLOAT, fixed(&[1, 1, 1, side, side])),
        Io::new("object_score_logits", FLOAT, fixed(&[1, 1, 1])),
    ];
    Ok((inputs, outputs))
}

/// Random-Fourier encoding of coordinates in `[0, 1]` (`[..., 2]` → `[..., C]`): `cat(sin(θ), cos(θ))` with
/// `θ = 2π · (2x − 1) @ pe`.
fn fourier(g: &mut Graph<'_>, coords: &str, pe: &str) -> String {
    let two = g.scalar(2.0);
    let one = g.scalar(1.0);
    let two_pi = g.scalar(2.0 * std::f32::consts::PI);
    let x = g.node("Mul", "coords_2x", &[coords, &two], vec![]);
    let x = g.node("Sub", "coords_signed", &[&x, &one], vec![]);
    let x = g.node("MatMul", "coords_proj", &[&x, pe], vec![]);
    let x = g.node("Mul", "coords_angle", &[&two_pi, &x], vec![]);
    let s = g.node("Sin", "coords_sin", &[&x], vec![]);
    let c = g.node("Cos", "coords_cos", &[&x], vec![]);
    g.node("Concat", "fourier", &[&s, &c], vec![attr_int("axis", -1)])
}

/// `Sam2MaskEmbedding` of `input_masks`: two stride-2 convolutions with channels-first norms and GELU, then a 1×1
/// convolution to the hidden size.
fn mask_embedding(g: &mut Graph<'_>, c: &Sam2Config) -> Result<String, GraphError> {
    let p = format!("{PE}.mask_embed");
    let (mc, ch) = (c.mask_channels, c.decoder_hidden);
    let x = conv(g, "input_masks", &format!("{p}.conv1"), 1, mc / 4, 2)?;
    let x = channels_first_norm(g, &x, &format!("{p}.layer_norm1"), mc / 4, c.prompt_eps)?;
    let x = gelu(g, &x);
    let x = conv(g, &x, &format!("{p}.conv2"), mc / 4, mc, 2)?;
    let x = channels_first_norm(g, &x, &format!("{p}.layer_norm2"), mc, c.prompt_eps)?;
    let x = gelu(g, &x);
    conv(g, &x, &format!("{p}.conv3"), mc, ch, 1)
}

/// A `k×k` convolution with stride `k` (`{prefix}.weight` `[dout, din, k, k]`, `{prefix}.bias`).
fn conv(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize, k: usize) -> Result<String, GraphError> {
    let w = g.weight(&format!("{prefix}.weight"), &[dout, din, k, k])?;
    let b = g.weight(&format!("{prefix}.bias"), &[dout])?;
    let k = k as i64;
    Ok(g.node("Conv", "conv", &[x, &w, &b], vec![attr_ints("kernel_shape", &[k, k]), attr_ints("strides", &[k, k])]))
}

/// A 2×2 stride-2 transposed convolution (`{prefix}.weight` `[din, dout, 2, 2]`, `{prefix}.bias`).
fn conv_transpose(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String, GraphError> {
    let w = g.weight(&format!("{prefix}.weight"), &[din, dout, 2, 2])?;
    let b = g.weight(&format!("{prefix}.bias"), &[dout])?;
    Ok(g.node(
        "ConvTranspose",
        "conv_transpose",
        &[x, &w, &b],
        vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
    ))
}

/// LayerNorm over the channels of an NCHW tensor.
fn channels_first_norm(g: &mut Graph<'_>, x: &str, prefix: &str, ch: usize, eps: f32) -> Result<String, GraphError> {
    let t = g.node("Transpose", "norm_nhwc", &[x], vec![attr_ints("perm", &[0, 2, 3, 1])]);
    let n = layer_norm(g, &t, prefix, ch, eps, true)?;
    Ok(g.node("Transpose", "norm_nchw", &[&n], vec![attr_ints("perm", &[0, 3, 1, 2])]))
}

/// `Sam2FeedForward`: `proj_in`, `layers - 2` hidden layers and `proj_out`, ReLU between, an optional sigmoid.
fn feed_forward(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    [din, hidden, dout]: [usize; 3],
    layers: usize,
    sigmoid: bool,
) -> Result<String, GraphError> {
    let mut h = linear(g, x, &format!("{prefix}.proj_in"), din, hidden, true)?;
    h = g.node("Relu", "ffn_relu", &[&h], vec![]);
    for i in 0..layers.saturating_sub(2) {
        h = linear(g, &h, &format!("{prefix}.layers.{i}"), hidden, hidden, true)?;
        h = g.node("Relu", "ffn_relu", &[&h], vec![]);
    }
    let out = linear(g, &h, &format!("{prefix}.proj_out"), hidden, dout, true)?;
    Ok(if sigmoid { g.node("Sigmoid", "ffn_sigmoid", &[&out], vec![]) } else { out })
}

/// `Sam2Attention` on `[L, C]` rows: projections to `C / downsample`, heads, scaled softmax, output projection.
fn attention(
    g: &mut Graph<'_>,
    c: &Sam2Config,
    prefix: &str,
    [q, k, v]: [&str; 3],
    downsample: usize,
) -> Result<String, GraphError> {
    let ch = c.decoder_hidden;
    let inner = ch / downsample;
    let heads = c.decoder_heads;
    let hd = inner / heads;
    let q = linear(g, q, &format!("{prefix}.q_proj"), ch, inner, true)?;
    let k = linear(g, k, &format!("{prefix}.k_proj"), ch, inner, true)?;
    let v = linear(g, v, &format!("{prefix}.v_proj"), ch, inner, true)?;
    let shape = g.ints("attn_heads", &[-1, heads as i64, hd as i64]);
    let split = |g: &mut Graph<'_>, x: &str, perm: &[i64]| {
        let r = g.node("Reshape", "attn_split", &[x, &shape], vec![]);
        g.node("Transpose", "attn_heads_t", &[&r], vec![attr_ints("perm", perm)])
    };
    let q = split(g, &q, &[1, 0, 2]);
    let kt = split(g, &k, &[1, 2, 0]);
    let v = split(g, &v, &[1, 0, 2]);
    let scores = g.node("MatMul", "scores", &[&q, &kt], vec![]);
    let scale = g.scalar((hd as f32).powf(-0.5));
    let scores = g.node("Mul", "scores_scaled", &[&scores, &scale], vec![]);
    let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.node("MatMul", "context", &[&probs, &v], vec![]);
    let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[1, 0, 2])]);
    let merge = g.ints("attn_merge", &[-1, inner as i64]);
    let ctx = g.node("Reshape", "context_rows", &[&ctx, &merge], vec![]);
    linear(g, &ctx, &format!("{prefix}.o_proj"), inner, ch, true)
}

/// The two-way transformer: returns the final `(queries, keys)`.
fn two_way_transformer(
    g: &mut Graph<'_>,
    c: &Sam2Config,
    tokens: &str,
    image: &str,
    key_pe: &str,
) -> Result<(String, String), GraphError> {
    let ch = c.decoder_hidden;
    let ds = c.downsample;
    let add = |g: &mut Graph<'_>, a: &str, b: &str| g.node("Add", "add", &[a, b], vec![]);
    let (mut queries, mut keys) = (tokens.to_string(), image.to_string());
    for i in 0..c.decoder_layers {
        let p = format!("{MD}.transformer.layers.{i}");
        let norm = |g: &mut Graph<'_>, x: &str, n: usize| {
            layer_norm(g, x, &format!("{p}.layer_norm{n}"), ch, TRANSFORMER_EPS, true)
        };
        queries = if i == 0 {
            attention(g, c, &format!("{p}.self_attn"), [&queries, &queries, &queries], 1)?
        } else {
            let q = add(g, &queries, tokens);
            let out = attention(g, c, &format!("{p}.self_attn"), [&q, &q, &queries], 1)?;
            add(g, &queries, &out)
        };
        queries = norm(g, &queries, 1)?;
        let q = add(g, &queries, tokens);
        let k = add(g, &keys, key_pe);
        let out = attention(g, c, &format!("{p}.cross_attn_token_to_image"), [&q, &k, &keys], ds)?;
        queries = add(g, &queries, &out);
        queries = norm(g, &queries, 2)?;
        let mlp = feed_forward(g, &queries, &format!("{p}.mlp"), [ch, c.mlp_dim, ch], c.decoder_layers, false)?;
        queries = add(g, &queries, &mlp);
        queries = norm(g, &queries, 3)?;
        let q = add(g, &queries, tokens);
        let k = add(g, &keys, key_pe);
        let out = attention(g, c, &format!("{p}.cross_attn_image_to_token"), [&k, &q, &queries], ds)?;
        keys = add(g, &keys, &out);
        keys = norm(g, &keys, 4)?;
    }
    let q = add(g, &queries, tokens);
    let k = add(g, &keys, key_pe);
    let out = attention(g, c, &format!("{MD}.transformer.final_attn_token_to_image"), [&q, &k, &keys], ds)?;
    let queries = add(g, &queries, &out);
    let queries =
        layer_norm(g, &queries, &format!("{MD}.transformer.layer_norm_final_attn"), ch, TRANSFORMER_EPS, true)?;
    Ok((queries, keys))
}

/// `_dynamic_multimask_via_stability`: the single-mask output where its stability score (the area above `delta`
/// over the area above `-delta`) reaches the threshold, else the multimask output with the highest IoU prediction.
fn dynamic_selection(
    g: &mut Graph<'_>,
    c: &Sam2Config,
    m0: &str,
    i0: &str,
    multi_masks: &str,
    multi_iou: &str,
) -> (String, String) {
    let best = g.node("ArgMax", "best_iou", &[multi_iou], vec![attr_int("axis", 2), attr_int("keepdims", 0)]);
    let one_dim = g.ints("one", &[1]);
    let best = g.node("Reshape", "best_index", &[&best, &one_dim], vec![]);
    let best_mask = g.node("Gather", "best_mask", &[multi_masks, &best], vec![attr_int("axis", 2)]);
    let best_iou = g.node("Gather", "best_iou_score", &[multi_iou, &best], vec![attr_int("axis", 2)]);
    let area = |g: &mut Graph<'_>, t: f32| {
        let t = g.scalar(t);
        let above = g.node("Greater", "above", &[m0, &t], vec![]);
        let above = g.node("Cast", "above_f", &[&above], vec![attr_int("to", FLOAT)]);
        g.reduce_sum(&above, &[3, 4], false, "area")
    };
    let area_i = area(g, c.stability_delta);
    let area_u = area(g, -c.stability_delta);
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let nonempty = g.node("Greater", "union_nonempty", &[&area_u, &zero], vec![]);
    let ratio = g.node("Div", "stability_ratio", &[&area_i, &area_u], vec![]);
    let score = g.node("Where", "stability", &[&nonempty, &ratio, &one], vec![]);
    let thresh = g.scalar(c.stability_thresh);
    let stable = g.node("GreaterOrEqual", "stable", &[&score, &thresh], vec![]);
    let stable_mask = g.unsqueeze(&stable, &[3, 4], "stable_mask");
    let mask = g.node("Where", "selected_mask", &[&stable_mask, m0, &best_mask], vec![]);
    let iou = g.node("Where", "selected_iou", &[&stable, i0, &best_iou], vec![]);
    (mask, iou)
}
