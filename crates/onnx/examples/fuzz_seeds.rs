//! Writes a seed corpus for the reader fuzz targets of `fuzz/`: a small
//! exported model and its weights as safetensors, npy and npz.
//!
//! `cargo run -p hasten-onnx --example fuzz_seeds -- DIR`

use std::path::PathBuf;

use hasten_core::{
    ActShape, ConvLayer, ConvSpec, GraphBuilder, MaxPool, PoolSpec, Relu, SeededRng,
};
use hasten_onnx::export_bytes;
use hasten_onnx::weights::{write_npy, write_npz, write_safetensors};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds DIR")?);
    let mut rng = SeededRng::new(0);
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(3, 8, 8));
    let conv = ConvLayer::from_array(
        rng.normal_array((4, 3, 3, 3), 0.3),
        ConvSpec::new().with_padding(1),
    )?;
    let y = b.op("conv", conv, x);
    let y = b.op("relu", Relu, y);
    let y = b.op("pool", MaxPool::new(PoolSpec::square(2).with_stride(2))?, y);
    b.output(y);
    let graph = b.build()?;
    let params = graph.parameters();
    let seeds = [
        ("onnx_import", export_bytes(&graph)?),
        ("safetensors_read", write_safetensors(&params)?),
        ("npy_read", write_npy(&params[0].1)?),
        ("npz_read", write_npz(&params)?),
    ];
    for (target, bytes) in seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("seed"), bytes)?;
    }
    Ok(())
}
