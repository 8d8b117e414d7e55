//! ONNX Runtime's record of which execution provider runs which graph node (`Session_GetEpGraphAssignmentInfo`,
//! enabled by a session config entry).

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};

use bulkhead_core::NodePlacement;
use ort::AsPointer;

/// The session config entry that makes ONNX Runtime record the graph assignment.
pub const RECORD_KEY: &str = "session.record_ep_graph_assignment_info";

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Node count and operator types per execution provider, merged over the provider's subgraphs.
pub fn read(session: &ort::session::Session) -> Result<Vec<NodePlacement>, String> {
    let api = ort::api();
    let mut subgraphs: *const *const ort::sys::OrtEpAssignedSubgraph = std::ptr::null();
    let mut n = 0usize;
    crate::status_to_result(unsafe { (api.Session_GetEpGraphAssignmentInfo)(session.ptr(), &mut subgraphs, &mut n) })?;
    let mut by_provider: BTreeMap<String, NodePlacement> = BTreeMap::new();
    for i in 0..n {
        let sg = unsafe { *subgraphs.add(i) };
        let mut name: *const c_char = std::ptr::null();
        crate::status_to_result(unsafe { (api.EpAssignedSubgraph_GetEpName)(sg, &mut name) })?;
        let provider = cstr(name);
        let mut nodes: *const *const ort::sys::OrtEpAssignedNode = std::ptr::null();
        let mut count = 0usize;
        crate::status_to_result(unsafe { (api.EpAssignedSubgraph_GetNodes)(sg, &mut nodes, &mut count) })?;
        let entry = by_provider.entry(provider.clone()).or_insert_with(|| NodePlacement {
            provider,
            nodes: 0,
            op_types: BTreeMap::new(),
        });
        for j in 0..count {
            let node = unsafe { *nodes.add(j) };
            let mut op: *const c_char = std::ptr::null();
            crate::status_to_result(unsafe { (api.EpAssignedNode_GetOperatorType)(node, &mut op) })?;
            entry.nodes += 1;
            *entry.op_types.entry(cstr(op)).or_default() += 1;
        }
    }
    Ok(by_provider.into_values().collect())
}
