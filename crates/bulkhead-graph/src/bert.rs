//! The BERT encoder as an ONNX graph, written in the exact shapes ONNX Runtime's CPU graph optimiser fuses:
//!
//! * embeddings: `Gather(word) + Gather(position, Expand(Unsqueeze(Range(0, Shape[1], 1))))` then
//!   `+ Gather(token_type)` then `LayerNormalization` → **EmbedLayerNormalization**;
//! * self-attention: `MatMul+Add` for Q, K, V → `Reshape [0,0,N,H]` → `Transpose` (K: `0,2,3,1`) → `MatMul` →
//!   `Div sqrt(H)` → `Add` of the mask bias `Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask)))), -10000)` → `Softmax(3)` →
//!   `MatMul V` → `Transpose` → `Reshape [0,0,W]` → **Attention**;
//! * residual `Add` + `LayerNormalization` → **SkipLayerNormalization**;
//! * `MatMul+Add` then `x * (1 + Erf(x / sqrt 2))` then `* 0.5` → **Gelu** → **BiasGelu**.
//!
//! The opset matters: ONNX Runtime's attention fusion only matches the pre-13 versions of `Add`, `Mul`, `Sub`,
//! `Div`, `Softmax`, `Reshape`, `Transpose`, `Unsqueeze` (axes as an attribute) and `Cast`, and the
//! LayerNormalization registered for opsets below 17; in dynamic mode the layer-norm fusions only fire once attention
//! is fused. The default opset is therefore 12, where `LayerNormalization` is the ONNX Runtime operator of the ONNX
//! domain (version 1). The test `onnx_runtime_fuses_attention_gelu_and_layer_norm_on_cpu` checks the optimised graph.
//!
//! Linear weights stay in Hugging Face layout `[out, in]` (so they can point into the safetensors file) behind a
//! `Transpose` that ONNX Runtime constant-folds at session creation.

use crate::config::{Activation, BertConfig};
use crate::proto::{Bytes, Msg};
use crate::weights::{TensorSlice, Weights};
use crate::{GraphError, ShapeMode};

/// ONNX `TensorProto.DataType` values.
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// How tensors are stored in the emitted model.
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// Bytes copied into `raw_data`.
    Embedded,
    /// `data_location = EXTERNAL` pointing into the safetensors file at `location` (relative to the model).
    External {
        /// The file name, relative to the model's folder.
        location: String,
    },
}

/// Accumulates nodes and initializers.
struct Graph<'a> {
    nodes: Vec<Msg<'a>>,
    initializers: Vec<Msg<'a>>,
    counter: usize,
    opset: i64,
}

fn attr_int(name: &str, v: i64) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 2).int(3, v)
}

fn attr_ints(name: &str, v: &[i64]) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 7).packed_ints(8, v)
}

fn attr_float(name: &str, v: f32) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 1).float(2, v)
}

impl<'a> Graph<'a> {
    fn node(&mut self, op: &str, hint: &str, inputs: &[&str], attrs: Vec<Msg<'a>>) -> String {
        self.counter += 1;
        let out = format!("{hint}_{}", self.counter);
        self.node_to(op, inputs, &out, attrs);
        out
    }

    fn node_to(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<Msg<'a>>) {
        let mut n = Msg::new();
        for i in inputs {
            n = n.str(1, i);
        }
        n = n.str(2, output).str(3, &format!("{op}_{}", self.nodes.len())).str(4, op);
        for a in attrs {
            n = n.msg(5, a);
        }
        self.nodes.push(n);
    }

    fn tensor_header(name: &str, dims: &[i64], dtype: i64) -> Msg<'a> {
        Msg::new().packed_ints(1, dims).int(2, dtype).str(8, name)
    }

    fn const_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(Self::tensor_header(name, dims, FLOAT).bytes(9, Bytes::Owned(raw)));
        name.to_string()
    }

    fn const_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(Self::tensor_header(name, dims, INT64).bytes(9, Bytes::Owned(raw)));
        name.to_string()
    }

    fn weight(&mut self, t: &TensorSlice<'a>, storage: &Storage) -> String {
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let header = Self::tensor_header(&t.name, &dims, FLOAT);
        let msg = match (t.converted_f32(), storage) {
            (Some(owned), _) => header.bytes(9, Bytes::Owned(owned)),
            (None, Storage::Embedded) => header.bytes(9, Bytes::Borrowed(t.bytes)),
            (None, Storage::External { location }) => {
                let entry = |k: &str, v: &str| Msg::new().str(1, k).str(2, v);
                header
                    .msg(13, entry("location", location))
                    .msg(13, entry("offset", &t.file_offset.to_string()))
                    .msg(13, entry("length", &t.bytes.len().to_string()))
                    .int(14, 1)
            }
        };
        self.initializers.push(msg);
        t.name.clone()
    }

    /// `Unsqueeze` with the axes as an attribute (opset < 13) or an input.
    fn unsqueeze(&mut self, input: &str, axis: i64, hint: &str) -> String {
        if self.opset < 13 {
            self.node("Unsqueeze", hint, &[input], vec![attr_ints("axes", &[axis])])
        } else {
            let axes = self.const_i64(&format!("{hint}_axes"), &[1], &[axis]);
            self.node("Unsqueeze", hint, &[input, &axes], vec![])
        }
    }

    fn layer_norm(&mut self, input: &str, gamma: &str, beta: &str, eps: f32, hint: &str) -> String {
        self.node(
            "LayerNormalization",
            hint,
            &[input, gamma, beta],
            vec![attr_int("axis", -1), attr_float("epsilon", eps)],
        )
    }
}

fn value_info(name: &str, elem: i64, dims: &[Dim]) -> Msg<'static> {
    let mut shape = Msg::new();
    for d in dims {
        shape.push_msg(
            1,
            match d {
                Dim::Fixed(n) => Msg::new().int(1, *n as i64),
                Dim::Named(s) => Msg::new().str(2, s),
            },
        );
    }
    let tensor_type = Msg::new().int(1, elem).msg(2, shape);
    Msg::new().str(1, name).msg(2, Msg::new().msg(1, tensor_type))
}

enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// Builds the `ModelProto` of a BERT encoder; tensor bytes borrow from `weights`.
pub(crate) fn build<'a>(
    cfg: &BertConfig,
    weights: &'a Weights,
    shape: ShapeMode,
    opset: i64,
    storage: &Storage,
    producer_version: &str,
) -> Result<Msg<'a>, GraphError> {
    let mut g = Graph { nodes: vec![], initializers: vec![], counter: 0, opset };
    let h = cfg.hidden;
    let w = |g: &mut Graph<'a>, name: &str, shape: &[usize]| -> Result<String, GraphError> {
        let t = weights.get(name, shape)?;
        Ok(g.weight(&t, storage))
    };

    // Embeddings.
    let word = w(&mut g, "embeddings.word_embeddings.weight", &[cfg.vocab, h])?;
    let position = w(&mut g, "embeddings.position_embeddings.weight", &[cfg.max_positions, h])?;
    let token_type = w(&mut g, "embeddings.token_type_embeddings.weight", &[cfg.type_vocab, h])?;
    let word_e = g.node("Gather", "word_embed", &[&word, "input_ids"], vec![]);
    let ids_shape = g.node("Shape", "ids_shape", &["input_ids"], vec![]);
    let one_idx = g.const_i64("const_one_i64", &[], &[1]);
    let zero_idx = g.const_i64("const_zero_i64", &[], &[0]);
    let seq_len = g.node("Gather", "seq_len", &[&ids_shape, &one_idx], vec![attr_int("axis", 0)]);
    let range = g.node("Range", "positions", &[&zero_idx, &seq_len, &one_idx], vec![]);
    let positions_row = g.unsqueeze(&range, 0, "positions_row");
    let position_ids = g.node("Expand", "position_ids", &[&positions_row, &ids_shape], vec![]);
    let pos_e = g.node("Gather", "pos_embed", &[&position, &position_ids], vec![]);
    let type_e = g.node("Gather", "type_embed", &[&token_type, "token_type_ids"], vec![]);
    let sum1 = g.node("Add", "embed_sum", &[&word_e, &pos_e], vec![]);
    let sum2 = g.node("Add", "embed_sum", &[&sum1, &type_e], vec![]);
    let ln_g = w(&mut g, "embeddings.LayerNorm.weight", &[h])?;
    let ln_b = w(&mut g, "embeddings.LayerNorm.bias", &[h])?;
    let mut x = g.layer_norm(&sum2, &ln_g, &ln_b, cfg.eps, "embed_ln");

    // Additive attention mask, shared by all layers: (1 - mask) * -10000, shape [batch, 1, 1, seq].
    let m1 = g.unsqueeze("attention_mask", 1, "mask_unsqueeze1");
    let m2 = g.unsqueeze(&m1, 2, "mask_unsqueeze2");
    let m3 = g.node("Cast", "mask_float", &[&m2], vec![attr_int("to", FLOAT)]);
    let one_f = g.const_f32("const_one_f32", &[], &[1.0]);
    let inverted = g.node("Sub", "mask_inverted", &[&one_f, &m3], vec![]);
    let big_neg = g.const_f32("const_mask_value", &[], &[-10000.0]);
    let mask_bias = g.node("Mul", "mask_bias", &[&inverted, &big_neg], vec![]);

    let heads = cfg.heads as i64;
    let head_size = cfg.head_size() as i64;
    let split_shape = g.const_i64("shape_split_heads", &[4], &[0, 0, heads, head_size]);
    let merge_shape = g.const_i64("shape_merge_heads", &[3], &[0, 0, h as i64]);
    let scale = g.const_f32("const_sqrt_head_size", &[], &[(head_size as f32).sqrt()]);
    let sqrt2 = g.const_f32("const_sqrt2", &[], &[std::f32::consts::SQRT_2]);
    let half = g.const_f32("const_half", &[], &[0.5]);

    // Linear layer in HF layout: x @ W^T + b, with W^T a constant-folded Transpose.
    let linear = |g: &mut Graph<'a>, x: &str, prefix: &str, din: usize, dout: usize| -> Result<String, GraphError> {
        let weight = w(g, &format!("{prefix}.weight"), &[dout, din])?;
        let bias = w(g, &format!("{prefix}.bias"), &[dout])?;
        let wt = g.node("Transpose", &format!("{prefix}.weight_t"), &[&weight], vec![attr_ints("perm", &[1, 0])]);
        let mm = g.node("MatMul", &format!("{prefix}.matmul"), &[x, &wt], vec![]);
        Ok(g.node("Add", &format!("{prefix}.out"), &[&mm, &bias], vec![]))
    };

    for l in 0..cfg.layers {
        let p = format!("encoder.layer.{l}");
        let att = format!("{p}.attention.self");
        let q = linear(&mut g, &x, &format!("{att}.query"), h, h)?;
        let k = linear(&mut g, &x, &format!("{att}.key"), h, h)?;
        let v = linear(&mut g, &x, &format!("{att}.value"), h, h)?;
        let q = g.node("Reshape", "q_heads", &[&q, &split_shape], vec![]);
        let q = g.node("Transpose", "q_t", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = g.node("Reshape", "k_heads", &[&k, &split_shape], vec![]);
        let k = g.node("Transpose", "k_t", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.node("Reshape", "v_heads", &[&v, &split_shape], vec![]);
        let v = g.node("Transpose", "v_t", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = g.node("MatMul", "scores", &[&q, &k], vec![]);
        let scores = g.node("Div", "scores_scaled", &[&scores, &scale], vec![]);
        let scores = g.node("Add", "scores_masked", &[&scores, &mask_bias], vec![]);
        let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", 3)]);
        let ctx = g.node("MatMul", "context", &[&probs, &v], vec![]);
        let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = g.node("Reshape", "context_merged", &[&ctx, &merge_shape], vec![]);
        let out = linear(&mut g, &ctx, &format!("{p}.attention.output.dense"), h, h)?;
        let res = g.node("Add", "attention_residual", &[&out, &x], vec![]);
        let ln_g = w(&mut g, &format!("{p}.attention.output.LayerNorm.weight"), &[h])?;
        let ln_b = w(&mut g, &format!("{p}.attention.output.LayerNorm.bias"), &[h])?;
        let attn = g.layer_norm(&res, &ln_g, &ln_b, cfg.eps, "attention_ln");

        let inter = linear(&mut g, &attn, &format!("{p}.intermediate.dense"), h, cfg.intermediate)?;
        let act = match cfg.activation {
            Activation::Gelu => {
                let d = g.node("Div", "gelu_div", &[&inter, &sqrt2], vec![]);
                let e = g.node("Erf", "gelu_erf", &[&d], vec![]);
                let a = g.node("Add", "gelu_add", &[&e, &one_f], vec![]);
                let m = g.node("Mul", "gelu_mul", &[&inter, &a], vec![]);
                g.node("Mul", "gelu", &[&m, &half], vec![])
            }
            Activation::Relu => g.node("Relu", "relu", &[&inter], vec![]),
        };
        let out = linear(&mut g, &act, &format!("{p}.output.dense"), cfg.intermediate, h)?;
        let res = g.node("Add", "output_residual", &[&out, &attn], vec![]);
        let ln_g = w(&mut g, &format!("{p}.output.LayerNorm.weight"), &[h])?;
        let ln_b = w(&mut g, &format!("{p}.output.LayerNorm.bias"), &[h])?;
        let is_last = l + 1 == cfg.layers;
        if is_last {
            g.node_to(
                "LayerNormalization",
                &[&res, &ln_g, &ln_b],
                "last_hidden_state",
                vec![attr_int("axis", -1), attr_float("epsilon", cfg.eps)],
            );
            x = "last_hidden_state".to_string();
        } else {
            x = g.layer_norm(&res, &ln_g, &ln_b, cfg.eps, "output_ln");
        }
    }
    if cfg.layers == 0 {
        g.node_to("Identity", &[&x], "last_hidden_state", vec![]);
    }

    let (b, s) = match shape {
        ShapeMode::Dynamic => (Dim::Named("batch"), Dim::Named("sequence")),
        ShapeMode::Static { batch, seq } => (Dim::Fixed(batch), Dim::Fixed(seq)),
    };
    let dims_of = |b: &Dim, s: &Dim| -> [Dim; 2] {
        let c = |d: &Dim| match d {
            Dim::Fixed(n) => Dim::Fixed(*n),
            Dim::Named(n) => Dim::Named(n),
        };
        [c(b), c(s)]
    };
    let mut graph = Msg::new();
    for n in g.nodes {
        graph.push_msg(1, n);
    }
    graph = graph.str(2, "bert");
    for t in g.initializers {
        graph.push_msg(5, t);
    }
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        graph.push_msg(11, value_info(name, INT64, &dims_of(&b, &s)));
    }
    let [b2, s2] = dims_of(&b, &s);
    graph.push_msg(12, value_info("last_hidden_state", FLOAT, &[b2, s2, Dim::Fixed(h)]));

    Ok(Msg::new()
        .int(1, 8) // ir_version
        .str(2, "bulkhead-graph")
        .str(3, producer_version)
        .msg(7, graph)
        .msg(8, Msg::new().str(1, "").int(2, opset)))
}
