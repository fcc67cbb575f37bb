//! npz bytes (a zip of npy files) → named f32 arrays, or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hasten_onnx::weights::read_npz(data);
});
