//! `onnx-proto-gen PROTO_DIR ONNX_VERSION OUT_FILE`: compiles `PROTO_DIR/onnx.proto`
//! with protox (no `protoc` needed) and writes the prost types to `OUT_FILE`
//! under a header recording the onnx package version they came from.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, version, out] = args.as_slice() else {
        return Err("usage: onnx-proto-gen PROTO_DIR ONNX_VERSION OUT_FILE".into());
    };
    let fds = protox::compile(["onnx.proto"], [dir])?;
    let tmp = tempdir()?;
    prost_build::Config::new()
        .out_dir(&tmp)
        .compile_fds(fds)?;
    let generated = std::fs::read_to_string(tmp.join("onnx.rs"))?;
    let header = format!(
        "// @generated from `onnx/onnx.proto` of the PyPI package onnx {version}\n\
         // by scripts/gen-onnx-proto.sh (protox + prost-build). Do not edit.\n\n"
    );
    std::fs::write(out, header + &generated)?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

fn tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("onnx-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
