//! Saving and loading a graph's parameters by `state_dict` name.

mod common;

use std::process::Command;

use hasten_core::{relative_error, SeededRng};
use hasten_models::ModelConfig;
use hasten_onnx::weights::{load_weights, read_npz, save_weights};
use hasten_onnx::OnnxError;

fn resnet8(seed: u64) -> hasten_core::Graph {
    hasten_models::resnet8(
        &ModelConfig::mnist()
            .with_seed(seed)
            .with_random_batch_norm(),
    )
    .unwrap()
}

#[test]
fn save_then_load_reproduces_the_network() {
    let trained = resnet8(1);
    let x = SeededRng::new(2).normal_array(trained.inputs()[0].shape().batched(2), 1.0);
    let want = trained.reference_forward(&[&x]).unwrap().remove(0);
    let dir = common::scratch("weights");
    for file in ["w.safetensors", "w.npz"] {
        let path = dir.join(file);
        save_weights(&trained, &path).unwrap();
        let mut fresh = resnet8(99);
        assert_ne!(fresh.parameters(), trained.parameters());
        load_weights(&mut fresh, &path).unwrap();
        assert_eq!(fresh.parameters(), trained.parameters(), "{file}");
        let got = fresh.reference_forward(&[&x]).unwrap().remove(0);
        assert_eq!(relative_error(&want, &got), 0.0, "{file}");
    }
    // A file with a parameter too few is a typed error naming it.
    let mut params = trained.parameters();
    let (dropped, _) = params.remove(0);
    let path = dir.join("partial.npz");
    std::fs::write(&path, hasten_onnx::weights::write_npz(&params).unwrap()).unwrap();
    let err = load_weights(&mut resnet8(3), &path).unwrap_err();
    assert!(
        matches!(err, OnnxError::Core { .. }) && err.to_string().contains(&dropped),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn numpy_savez_compressed_loads() {
    let Some(python) = common::python_with_ort("numpy npz interoperability") else {
        return;
    };
    let graph = resnet8(4);
    let dir = common::scratch("numpy");
    let path = dir.join("from_numpy.npz");
    // NumPy writes every parameter as seeded normals, some in Fortran order,
    // some as float64, compressed.
    let spec: Vec<String> = graph
        .parameters()
        .iter()
        .map(|(n, a)| format!("('{n}', {:?})", a.shape()))
        .collect();
    let script = format!(
        "import numpy as np\nrng = np.random.default_rng(0)\nout = {{}}\n\
         for i, (n, s) in enumerate([{}]):\n    a = np.abs(rng.standard_normal(s)) + 0.1\n    \
         a = np.asfortranarray(a) if i % 3 == 0 else a\n    out[n] = a if i % 2 else a.astype(np.float32)\n\
         out['bn1.num_batches_tracked'] = np.array(5)\n\
         np.savez_compressed(r'{}', **out)\n",
        spec.join(", "),
        path.display()
    );
    let status = Command::new(python).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let read = read_npz(&std::fs::read(&path).unwrap()).unwrap();
    let mut g = graph.clone();
    load_weights(&mut g, &path).unwrap();
    for (name, value) in g.parameters() {
        let (_, want) = read.iter().find(|(n, _)| *n == name).unwrap();
        assert_eq!(&value, want, "{name}");
        assert!(value.iter().all(|&v| v >= 0.1), "{name}: loaded values");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_compressed_graph_round_trips_with_its_block_parameters() {
    use hasten_core::graph::NodeFilter;
    use hasten_core::Transform;
    use hasten_tensor_decomp::Tucker2;
    let compress = |seed: u64| {
        let mut g = resnet8(seed);
        let filter = NodeFilter::kind("conv").except_first(1);
        let t: &dyn Transform = &Tucker2::with_ranks(4, 4);
        g.apply_transform(t, &filter).unwrap();
        g
    };
    let trained = compress(1);
    let names: Vec<String> = trained.parameters().into_iter().map(|(n, _)| n).collect();
    // Tucker-2 turns a convolution into a block of three: names `<node>.<i>.weight`.
    let blocks: Vec<&str> = trained
        .nodes()
        .iter()
        .filter(|n| matches!(n.op(), hasten_core::NodeOp::Block(_)))
        .map(|n| n.name())
        .collect();
    assert!(!blocks.is_empty());
    for node in &blocks {
        for i in 0..3 {
            assert!(names.contains(&format!("{node}.{i}.weight")), "{node}.{i}");
        }
    }
    let x = SeededRng::new(2).normal_array(trained.inputs()[0].shape().batched(2), 1.0);
    let want = trained.reference_forward(&[&x]).unwrap().remove(0);
    let dir = common::scratch("compressed-weights");
    for file in ["w.safetensors", "w.npz"] {
        let path = dir.join(file);
        save_weights(&trained, &path).unwrap();
        let mut fresh = compress(99);
        assert_ne!(fresh.parameters(), trained.parameters());
        load_weights(&mut fresh, &path).unwrap();
        assert_eq!(fresh.parameters(), trained.parameters(), "{file}");
        let got = fresh.reference_forward(&[&x]).unwrap().remove(0);
        assert_eq!(want, got, "{file}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
