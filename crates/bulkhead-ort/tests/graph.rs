//! Any ONNX model on ONNX Runtime: the committed `affine_relu.onnx` (no tokenizer) loaded as a plain graph, its
//! declared inputs and outputs, exact outputs, and engine-side checks of what a caller sends.

use std::path::Path;

use bulkhead_core::{DataType, Engine, ModelFiles, NamedTensor, TensorData, Unit};
use bulkhead_ort::OrtEngine;

fn affine() -> Option<ModelFiles> {
    if let Err(e) = bulkhead_ort::runtime() {
        bulkhead_testkit::skip(&format!("no ONNX Runtime library ({e}); run scripts/setup.sh"));
        return None;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/affine_relu.onnx");
    Some(ModelFiles::open(&path).unwrap())
}

fn x(shape: Vec<usize>, data: Vec<f32>) -> NamedTensor {
    NamedTensor::new("x", shape, TensorData::F32(data)).unwrap()
}

#[test]
fn a_graph_without_a_tokenizer_runs_on_named_tensors() {
    let Some(model) = affine() else { return };
    assert!(model.is_tensor_model());
    let mut s = OrtEngine::default().load_graph(&model, &Unit::ORT_CPU).unwrap();
    assert_eq!(s.report().unit, Unit::ORT_CPU);
    assert!(s.report().placement.iter().all(|p| p.provider == "CPUExecutionProvider"), "{:?}", s.report().placement);
    let (inputs, outputs) = (s.inputs().to_vec(), s.outputs().to_vec());
    assert_eq!(
        (inputs[0].name.as_str(), inputs[0].datatype, inputs[0].shape.clone()),
        ("x", Some(DataType::Fp32), vec![-1, 3])
    );
    assert_eq!(
        outputs.iter().map(|o| (o.name.as_str(), o.datatype)).collect::<Vec<_>>(),
        vec![("y", Some(DataType::Fp32)), ("label", Some(DataType::Int64))]
    );

    let out = s.run(&[x(vec![2, 3], vec![1.0, 2.0, 3.0, 0.0, 1.0, 0.0])]).unwrap();
    assert_eq!(out[0], NamedTensor::new("y", vec![2, 2], TensorData::F32(vec![2.5, 2.5, 2.5, 0.0])).unwrap());
    assert_eq!(out[1], NamedTensor::new("label", vec![2], TensorData::I64(vec![0, 0])).unwrap());

    // What ONNX Runtime would reject obscurely is an error naming the input.
    let mut err = |inputs: &[NamedTensor]| s.run(inputs).unwrap_err().to_string();
    assert!(err(&[]).contains("missing input `x`"));
    assert!(err(&[x(vec![1, 4], vec![0.0; 4])]).contains("dimension 1 must be 3"));
    let ints = NamedTensor::new("x", vec![1, 3], TensorData::I64(vec![0; 3])).unwrap();
    assert!(err(&[ints]).contains("must be FP32"));
    let extra = NamedTensor::new("z", vec![1], TensorData::F32(vec![0.0])).unwrap();
    assert!(err(&[x(vec![1, 3], vec![0.0; 3]), extra]).contains("no input `z`"));
}

#[test]
fn embedding_loading_of_a_plain_graph_says_what_to_do() {
    let Some(model) = affine() else { return };
    let err = OrtEngine::default().load(&model, &Unit::ORT_CPU).err().unwrap().to_string();
    assert!(err.contains("input `x`") && err.contains("KServe v2 infer"), "{err}");
}

/// Each way ONNX Runtime refuses a model is its own kind, decided here from its error code (and, for a format too
/// new, the one refusal without a code of its own, from its wording), so that nobody downstream reads messages.
#[test]
fn refused_models_are_classified_by_the_engine() {
    if bulkhead_ort::runtime().is_err() {
        bulkhead_testkit::skip("no ONNX Runtime library; run scripts/setup.sh");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/refused");
    for (file, kind, says) in [
        ("ir_too_new.onnx", "format_too_new", "IR version"),
        ("opset_too_new.onnx", "format_too_new", "99"),
        ("unknown_op.onnx", "unsupported", "NoSuchOp"),
        ("no_kernel.onnx", "unsupported", "Relu"),
        ("truncated.onnx", "model_rejected", "truncated.onnx"),
    ] {
        let model = ModelFiles::open(&dir.join(file)).unwrap();
        let err = OrtEngine::default().load_graph(&model, &Unit::ORT_CPU).err().unwrap();
        assert_eq!(err.kind(), kind, "{file}: {err}");
        assert!(err.to_string().contains(says), "{file}: {err}");
    }
}
