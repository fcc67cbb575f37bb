//! ONNX bytes → decode, tensor reads and the whole import: errors, never a
//! panic or an allocation the bytes do not justify.
#![no_main]

use hasten_onnx::{import_bytes, ImportOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ImportOptions {
        // Folded constants stay small under the fuzzer's memory limit.
        max_folded_elements: 1 << 20,
        ..ImportOptions::default()
    };
    if let Ok(graph) = import_bytes(data, &options) {
        let _ = graph.cost();
    }
});
