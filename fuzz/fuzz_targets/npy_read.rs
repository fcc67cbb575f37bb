//! npy bytes → an f32 array, or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hasten_onnx::weights::read_npy(data);
});
