//! The graph under construction: nodes, initializers and the graph's inputs and output, written as an ONNX
//! `ModelProto` by [`Graph::finish`]. Every architecture module builds through this type; the shared layers live in
//! [`layers`](crate::layers).

use crate::proto::{Bytes, Msg};
use crate::quant::{QuantPlan, Recorder};
use crate::weights::{TensorSlice, Weights};
use crate::{GraphError, ShapeMode};

/// ONNX `TensorProto.DataType` values.
pub(crate) const FLOAT: i64 = 1;
pub(crate) const INT64: i64 = 7;

/// How tensors are stored in the emitted model.
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// Bytes copied into `raw_data`.
    Embedded,
    /// `data_location = EXTERNAL` pointing into the weights files beside the model; `locations[i]` is the name of
    /// shard `i` relative to the model's folder.
    External {
        /// One file name per shard, in shard order.
        locations: Vec<String>,
    },
}

pub(crate) fn attr_int(name: &str, v: i64) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 2).int(3, v)
}

pub(crate) fn attr_ints(name: &str, v: &[i64]) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 7).packed_ints(8, v)
}

pub(crate) fn attr_str(name: &str, v: &str) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 3).str(4, v)
}

pub(crate) fn attr_float(name: &str, v: f32) -> Msg<'static> {
    Msg::new().str(1, name).int(20, 1).float(2, v)
}

/// Accumulates nodes and initializers; tensor bytes borrow from the mapped weights.
pub(crate) struct Graph<'a> {
    nodes: Vec<Msg<'a>>,
    initializers: Vec<Msg<'a>>,
    counter: usize,
    /// The ONNX opset the graph is written for.
    pub opset: i64,
    weights: &'a Weights,
    storage: Storage,
    consts: std::collections::HashMap<String, String>,
    plan: Option<&'a QuantPlan>,
    /// The linear layers written so far, probes and int8 bookkeeping.
    pub(crate) rec: Recorder,
}

impl<'a> Graph<'a> {
    pub fn new(weights: &'a Weights, opset: i64, storage: &Storage) -> Graph<'a> {
        Graph {
            nodes: vec![],
            initializers: vec![],
            counter: 0,
            opset,
            weights,
            storage: storage.clone(),
            consts: Default::default(),
            plan: None,
            rec: Recorder::default(),
        }
    }

    /// Writes the linear layers `plan` names in int8.
    pub fn with_plan(mut self, plan: Option<&'a QuantPlan>) -> Self {
        self.plan = plan;
        self
    }

    /// Adds `ReduceMax(|x|)` outputs on the input of every linear layer (for calibration).
    pub fn probing(mut self) -> Self {
        self.rec.probing = true;
        self
    }

    /// The int8 plan, if any.
    pub fn plan(&self) -> Option<&'a QuantPlan> {
        self.plan
    }

    /// The mapped weights.
    pub fn weights(&self) -> &'a Weights {
        self.weights
    }

    /// Adds a node with one output named after `hint`; returns the output's name.
    pub fn node(&mut self, op: &str, hint: &str, inputs: &[&str], attrs: Vec<Msg<'a>>) -> String {
        self.counter += 1;
        let out = format!("{hint}_{}", self.counter);
        self.node_to(op, inputs, &out, attrs);
        out
    }

    /// Adds a node whose single output has a given name.
    pub fn node_to(&mut self, op: &str, inputs: &[&str], output: &str, attrs: Vec<Msg<'a>>) {
        self.node_outs(op, inputs, &[output], attrs, "");
    }

    /// Adds a node with several outputs (or a contrib-domain node when `domain` is not empty).
    pub fn node_outs(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Msg<'a>>, domain: &str) {
        let mut n = Msg::new();
        for i in inputs {
            n = n.str(1, i);
        }
        for o in outputs {
            n = n.str(2, o);
        }
        n = n.str(3, &format!("{op}_{}", self.nodes.len())).str(4, op);
        for a in attrs {
            n = n.msg(5, a);
        }
        if !domain.is_empty() {
            n = n.str(7, domain);
        }
        self.nodes.push(n);
    }

    /// Fresh output names for a multi-output node.
    pub fn names(&mut self, hint: &str, n: usize) -> Vec<String> {
        self.counter += 1;
        (0..n).map(|i| format!("{hint}_{}_{i}", self.counter)).collect()
    }

    fn tensor_header(name: &str, dims: &[i64], dtype: i64) -> Msg<'a> {
        Msg::new().packed_ints(1, dims).int(2, dtype).str(8, name)
    }

    /// A float constant (deduplicated by name).
    pub fn const_f32(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        if !self.consts.contains_key(name) {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.initializers.push(Self::tensor_header(name, dims, FLOAT).bytes(9, Bytes::Owned(raw)));
            self.consts.insert(name.to_string(), name.to_string());
        }
        name.to_string()
    }

    /// A constant of ONNX element type `dtype` from its little-endian bytes (deduplicated by name).
    pub fn const_typed(&mut self, name: &str, dims: &[i64], dtype: i64, raw: Vec<u8>) -> String {
        if !self.consts.contains_key(name) {
            self.initializers.push(Self::tensor_header(name, dims, dtype).bytes(9, Bytes::Owned(raw)));
            self.consts.insert(name.to_string(), name.to_string());
        }
        name.to_string()
    }

    /// An int64 constant (deduplicated by name).
    pub fn const_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        if !self.consts.contains_key(name) {
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.initializers.push(Self::tensor_header(name, dims, INT64).bytes(9, Bytes::Owned(raw)));
            self.consts.insert(name.to_string(), name.to_string());
        }
        name.to_string()
    }

    /// A scalar float constant named by its value.
    pub fn scalar(&mut self, v: f32) -> String {
        self.const_f32(&format!("const_f32_{:08x}", v.to_bits()), &[], &[v])
    }

    /// A scalar int64 constant named by its value.
    pub fn scalar_i64(&mut self, v: i64) -> String {
        self.const_i64(&format!("const_i64_{v}").replace('-', "m"), &[], &[v])
    }

    /// A 1-D int64 constant.
    pub fn ints(&mut self, hint: &str, v: &[i64]) -> String {
        let key = format!("{hint}_{}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("_")).replace('-', "m");
        self.const_i64(&key, &[v.len() as i64], v)
    }

    /// The weight `name` (prefix-less), checked against `shape`; f16/bf16 are widened to f32 exactly.
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String, GraphError> {
        let t = self.weights.get(name, shape)?;
        Ok(self.add_weight(&t))
    }

    /// Adds the weight called exactly `name` in the checkpoint (no prefix added) as an initializer.
    pub fn weight_exact(&mut self, name: &str, shape: &[usize]) -> Result<String, GraphError> {
        let t = self.weights.get_exact(name, shape)?;
        Ok(self.add_weight(&t))
    }

    /// Whether the checkpoint has the tensor `name` (prefix-less).
    pub fn has_weight(&self, name: &str) -> bool {
        self.weights.contains(name)
    }

    fn add_weight(&mut self, t: &TensorSlice<'a>) -> String {
        if self.consts.contains_key(&t.name) {
            return t.name.clone();
        }
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let header = Self::tensor_header(&t.name, &dims, FLOAT);
        let msg = match (t.converted_f32(), &self.storage) {
            (Some(owned), _) => header.bytes(9, Bytes::Owned(owned)),
            (None, Storage::Embedded) => header.bytes(9, Bytes::Borrowed(t.bytes)),
            (None, Storage::External { locations }) => {
                let entry = |k: &str, v: &str| Msg::new().str(1, k).str(2, v);
                header
                    .msg(13, entry("location", &locations[t.shard]))
                    .msg(13, entry("offset", &t.file_offset.to_string()))
                    .msg(13, entry("length", &t.bytes.len().to_string()))
                    .int(14, 1)
            }
        };
        self.initializers.push(msg);
        self.consts.insert(t.name.clone(), t.name.clone());
        t.name.clone()
    }

    /// `Unsqueeze` with the axes as an attribute (opset < 13) or an input.
    pub fn unsqueeze(&mut self, input: &str, axes: &[i64], hint: &str) -> String {
        if self.opset < 13 {
            self.node("Unsqueeze", hint, &[input], vec![attr_ints("axes", axes)])
        } else {
            let axes = self.ints("axes", axes);
            self.node("Unsqueeze", hint, &[input, &axes], vec![])
        }
    }

    /// `ReduceMean` over the last axis, keeping it (axes as an attribute below opset 18).
    pub fn reduce_mean_last(&mut self, input: &str, hint: &str) -> String {
        if self.opset < 18 {
            self.node("ReduceMean", hint, &[input], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)])
        } else {
            let axes = self.ints("axes", &[-1]);
            self.node("ReduceMean", hint, &[input, &axes], vec![attr_int("keepdims", 1)])
        }
    }

    /// `ReduceSum` over `axes` (axes as an attribute below opset 13, an input from 13).
    pub fn reduce_sum(&mut self, input: &str, axes: &[i64], keepdims: bool, hint: &str) -> String {
        let keep = attr_int("keepdims", i64::from(keepdims));
        if self.opset < 13 {
            self.node("ReduceSum", hint, &[input], vec![attr_ints("axes", axes), keep])
        } else {
            let axes = self.ints("axes", axes);
            self.node("ReduceSum", hint, &[input, &axes], vec![keep])
        }
    }

    /// `Squeeze` of `axes` (axes as an attribute below opset 13, an input from 13).
    pub fn squeeze(&mut self, input: &str, axes: &[i64], hint: &str) -> String {
        if self.opset < 13 {
            self.node("Squeeze", hint, &[input], vec![attr_ints("axes", axes)])
        } else {
            let axes = self.ints("axes", axes);
            self.node("Squeeze", hint, &[input, &axes], vec![])
        }
    }

    /// `Split` of `input` on `axis` into parts of the given sizes (sizes as an attribute below opset 13).
    pub fn split(&mut self, input: &str, axis: i64, sizes: &[i64], hint: &str) -> Vec<String> {
        let outs = self.names(hint, sizes.len());
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        if self.opset < 13 {
            self.node_outs("Split", &[input], &refs, vec![attr_int("axis", axis), attr_ints("split", sizes)], "");
        } else {
            let s = self.ints("split", sizes);
            self.node_outs("Split", &[input, &s], &refs, vec![attr_int("axis", axis)], "");
        }
        outs
    }

    /// `Slice` of `input` on `axis` from `start` to `end` (constant bounds; inputs from opset 10).
    pub fn slice(&mut self, input: &str, axis: i64, start: i64, end: i64, hint: &str) -> String {
        let starts = self.ints("starts", &[start]);
        let ends = self.ints("ends", &[end]);
        let axes = self.ints("axes", &[axis]);
        self.node("Slice", hint, &[input, &starts, &ends, &axes], vec![])
    }

    /// Writes the `ModelProto`: `inputs` are int64 `[batch, sequence]`, the output `last_hidden_state` is float
    /// `[batch, sequence, hidden]`.
    pub fn finish(self, name: &str, inputs: &[&str], output: Output, shape: ShapeMode, producer: &str) -> Msg<'a> {
        let (b, s) = match shape {
            ShapeMode::Dynamic => (Dim::Named("batch"), Dim::Named("sequence")),
            ShapeMode::Static { batch, seq } => (Dim::Fixed(batch), Dim::Fixed(seq)),
        };
        let ins: Vec<Io> = inputs.iter().map(|n| Io::new(n, INT64, vec![b, s])).collect();
        let out = match output {
            Output::Hidden(hidden) => Io::new("last_hidden_state", FLOAT, vec![b, s, Dim::Fixed(hidden)]),
            Output::Logits(labels) => Io::new("logits", FLOAT, vec![b, Dim::Fixed(labels)]),
        };
        self.finish_io(name, &ins, &[out], producer)
    }

    /// Writes the `ModelProto` with any inputs and outputs (graphs of several outputs: Whisper's decoder with its
    /// key/value caches).
    pub fn finish_io(self, name: &str, inputs: &[Io], outputs: &[Io], producer: &str) -> Msg<'a> {
        let mut graph = Msg::new();
        for n in self.nodes {
            graph.push_msg(1, n);
        }
        graph = graph.str(2, name);
        for t in self.initializers {
            graph.push_msg(5, t);
        }
        for io in inputs {
            graph.push_msg(11, value_info(&io.name, io.elem, &io.dims));
        }
        for io in outputs {
            graph.push_msg(12, value_info(&io.name, io.elem, &io.dims));
        }
        for (name, features) in &self.rec.probes {
            graph.push_msg(12, value_info(name, FLOAT, &[Dim::Fixed(*features)]));
        }
        let mut model = Msg::new()
            .int(1, 8) // ir_version
            .str(2, "bulkhead-graph")
            .str(3, producer)
            .msg(7, graph)
            .msg(8, Msg::new().str(1, "").int(2, self.opset));
        if self.rec.contrib {
            model.push_msg(8, Msg::new().str(1, "com.microsoft").int(2, 1));
        }
        model
    }
}

/// A graph input or output: its name, ONNX element type and dimensions.
#[derive(Debug, Clone)]
pub(crate) struct Io {
    pub name: String,
    pub elem: i64,
    pub dims: Vec<Dim>,
}

impl Io {
    pub fn new(name: &str, elem: i64, dims: Vec<Dim>) -> Io {
        Io { name: name.to_string(), elem, dims }
    }
}

/// The graph's one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// `last_hidden_state` `[batch, seq, hidden]` (an encoder).
    Hidden(usize),
    /// `logits` `[batch, labels]` (a classification head).
    Logits(usize),
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (`batch`, `sequence`...).
    Named(&'static str),
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
