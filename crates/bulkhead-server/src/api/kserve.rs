//! KServe v2 / Open Inference Protocol: health, model metadata, readiness and JSON-tensor inference.
//!
//! Tensor `data` stays JSON until its `datatype` is known (the protocol allows flat and nested arrays); the route
//! turns it into typed values and checks it against the model's inputs.

use bulkhead_core::{DataType, TensorData};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// `POST /v2/models/{name}/infer`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// The input tensors. Embedding models: a BYTES tensor of texts `[n]`, or INT64 `input_ids` `[n, seq]` (with
    /// an optional `attention_mask` of the same shape). Other models: their graph inputs, by name.
    pub inputs: Vec<InferInput>,
    /// The outputs to return (default: all).
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Protocol parameters (accepted and ignored).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One input tensor.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InferInput {
    /// The input's name.
    pub name: String,
    /// Its shape; `data` holds exactly the product of the dimensions (a shape without dimensions: one value).
    #[serde(deserialize_with = "super::whole_numbers")]
    pub shape: Vec<u64>,
    /// Its element type.
    pub datatype: Datatype,
    /// The values, row-major, flat or nested.
    #[schema(schema_with = tensor_values)]
    pub data: Vec<serde_json::Value>,
    /// Protocol parameters (accepted and ignored).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An output asked for by name.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RequestedOutput {
    /// The output's name.
    pub name: String,
    /// Protocol parameters (accepted and ignored).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The element types bulkhead takes and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Datatype {
    /// Booleans.
    Bool,
    /// Unsigned 8-bit integers.
    Uint8,
    /// Signed 8-bit integers.
    Int8,
    /// Signed 32-bit integers.
    Int32,
    /// Signed 64-bit integers.
    Int64,
    /// 32-bit floats.
    Fp32,
    /// 64-bit floats.
    Fp64,
    /// Texts (embedding models).
    Bytes,
}

impl Datatype {
    /// The engine's element type (`None` for texts).
    pub fn tensor_type(self) -> Option<DataType> {
        Some(match self {
            Datatype::Bool => DataType::Bool,
            Datatype::Uint8 => DataType::Uint8,
            Datatype::Int8 => DataType::Int8,
            Datatype::Int32 => DataType::Int32,
            Datatype::Int64 => DataType::Int64,
            Datatype::Fp32 => DataType::Fp32,
            Datatype::Fp64 => DataType::Fp64,
            Datatype::Bytes => return None,
        })
    }
}

impl From<DataType> for Datatype {
    fn from(d: DataType) -> Datatype {
        match d {
            DataType::Bool => Datatype::Bool,
            DataType::Uint8 => Datatype::Uint8,
            DataType::Int8 => Datatype::Int8,
            DataType::Int32 => Datatype::Int32,
            DataType::Int64 => Datatype::Int64,
            DataType::Fp32 => Datatype::Fp32,
            DataType::Fp64 => Datatype::Fp64,
        }
    }
}

/// Flat or nested arrays of numbers, booleans or strings.
fn tensor_values() -> Schema {
    let scalar = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::String));
    let nested = ObjectBuilder::new().schema_type(SchemaType::from(Type::Array));
    ArrayBuilder::new().items(RefOr::T(Schema::OneOf(scalar.item(nested).build()))).build().into()
}

/// The answer of `POST /v2/models/{name}/infer`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// Always `1`.
    pub model_version: String,
    /// The request's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The output tensors.
    pub outputs: Vec<OutputTensor>,
}

/// One output tensor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutputTensor {
    /// The output's name.
    pub name: String,
    /// Its element type.
    pub datatype: Datatype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The values, row-major, flat.
    #[schema(schema_with = tensor_values)]
    pub data: TensorValues,
}

/// The values of an output tensor, written as a flat JSON array.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorValues(pub TensorData);

impl Serialize for TensorValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            TensorData::F32(v) => v.serialize(s),
            TensorData::F64(v) => v.serialize(s),
            TensorData::I64(v) => v.serialize(s),
            TensorData::I32(v) => v.serialize(s),
            TensorData::I8(v) => v.serialize(s),
            TensorData::U8(v) => v.serialize(s),
            TensorData::Bool(v) => v.serialize(s),
        }
    }
}

/// The answer of `GET /v2/models/{name}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// The model.
    pub name: String,
    /// Always `["1"]`.
    pub versions: Vec<String>,
    /// `onnxruntime_onnx` for tensor models, `bulkhead` for embedding models.
    pub platform: String,
    /// What it takes.
    pub inputs: Vec<TensorMetadata>,
    /// What it returns.
    pub outputs: Vec<TensorMetadata>,
}

/// A tensor a model takes or returns.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TensorMetadata {
    /// Its name.
    pub name: String,
    /// Its element type (`UNSUPPORTED` for one bulkhead cannot exchange).
    pub datatype: String,
    /// Its shape; `-1` for a dimension of any size.
    pub shape: Vec<i64>,
}

/// The answer of `GET /v2/health/live`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Live {
    /// Always true: the process answers.
    pub live: bool,
}

/// The answer of `GET /v2/health/ready`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ready {
    /// Whether every model has a warmed-up serving unit.
    pub ready: bool,
}

/// The answer of `GET /v2/models/{name}/ready`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelReady {
    /// The model.
    pub name: String,
    /// Whether it has a warmed-up serving unit.
    pub ready: bool,
}
