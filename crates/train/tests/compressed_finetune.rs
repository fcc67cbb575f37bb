//! Fine-tuning a compressed network (survey sections 2, 5, 6: decompose,
//! quantize or prune, then fine-tune): a CSR-pruned convolution, a k-means
//! codebook convolution and a Tensor-Train linear layer train their stored
//! values — the loss falls, the sparsity pattern and the codes stay exactly
//! as they were, and the trained graph's reference forward is the forward
//! the trainer computed.

use hasten_core::grad::Mode;
use hasten_core::op::{CodebookConv, Flatten, Op, Relu, SparseConv, TtLinear, WeightLayout};
use hasten_core::{
    bits_for, ActShape, Conv4d, ConvLayer, ConvSpec, Graph, GraphBuilder, PackedCodes, SeededRng,
};
use hasten_train::data::ImageSet;
use hasten_train::optim::Sgd;
use hasten_train::schedule::Constant;
use hasten_train::tape::TrainTape;
use hasten_train::trainer::{TrainConfig, Trainer};
use ndarray::{s, Array4};

const CLASSES: usize = 3;

/// `n` 1×8×8 images of three classes: noise plus a fixed class template.
fn data(n: usize, seed: u64) -> ImageSet {
    let templates: Array4<f32> = SeededRng::new(77).normal_array((CLASSES, 1, 8, 8), 1.0);
    let mut rng = SeededRng::new(seed);
    let mut images = Array4::<f32>::zeros((n, 1, 8, 8));
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % CLASSES;
        let noise: Array4<f32> = rng.normal_array((1, 1, 8, 8), 0.7);
        images
            .slice_mut(s![i..i + 1, .., .., ..])
            .assign(&(noise + templates.slice(s![label..label + 1, .., .., ..])));
        labels.push(label);
    }
    ImageSet::new(images, labels, CLASSES).unwrap()
}

/// Sparse conv (4×1×3×3, about half the weights removed) → ReLU → codebook
/// conv (6×4×3×3, stride 2, k = 4) → ReLU → flatten → TT linear 96 → 3
/// (modes 3 × 1 by 8 × 12, rank 2).
fn compressed_net() -> Graph {
    let mut rng = SeededRng::new(5);
    let same = ConvSpec::new().with_padding(1);
    let w: Array4<f32> = rng.normal_array((4, 1, 3, 3), 0.5);
    let pruned = w.mapv(|v| if v.abs() < 0.35 { 0.0 } else { v });
    let dense = ConvLayer::new(
        Conv4d::new(pruned).unwrap(),
        Some(ndarray::Array1::zeros(4)),
        same,
    )
    .unwrap();
    let sparse = SparseConv::from_conv(&dense).unwrap();
    let layout = WeightLayout::conv([6, 4, 3, 3], same.with_stride(2)).unwrap();
    let idx: Vec<u32> = (0..6 * 36).map(|_| rng.below(4) as u32).collect();
    let codes = PackedCodes::pack(&idx, 6, 36, bits_for(4)).unwrap();
    let books = ndarray::Array2::from_shape_vec((1, 4), vec![-0.3f32, -0.1, 0.1, 0.3]).unwrap();
    let codebook = CodebookConv::new(layout, codes, books, None).unwrap();
    let tt = TtLinear::new(
        vec![
            rng.normal_array((1, 3, 8, 2), 0.3),
            rng.normal_array((2, 1, 12, 1), 0.3),
        ],
        Some(ndarray::Array1::zeros(3)),
    )
    .unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(1, 8, 8));
    let y = b.op("conv1", sparse, x);
    let y = b.op("relu1", Relu, y);
    let y = b.op("conv2", codebook, y);
    let y = b.op("relu2", Relu, y);
    let y = b.op("flatten", Flatten, y);
    let y = b.op("fc", tt, y);
    b.output(y);
    b.build().unwrap()
}

/// Mean cross-entropy of `graph`'s reference forward on `set`.
fn loss(graph: &Graph, set: &ImageSet) -> f64 {
    let logits = graph.reference_forward(&[set.images()]).unwrap().remove(0);
    let n = set.labels().len();
    (0..n)
        .map(|i| {
            let row: Vec<f64> = (0..CLASSES)
                .map(|k| f64::from(logits[[i, k, 0, 0]]))
                .collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - row[set.labels()[i]]
        })
        .sum::<f64>()
        / n as f64
}

fn op<'g>(g: &'g Graph, name: &str) -> &'g Op {
    g.node(name).unwrap().op().as_op().unwrap()
}

#[test]
fn fine_tuning_trains_stored_values_and_keeps_the_structure() {
    let (train, test) = (data(120, 1), data(30, 2));
    let graph = compressed_net();
    let before = loss(&graph, &train);
    let config = TrainConfig {
        epochs: 4,
        batch_size: 20,
        eval_batch_size: 30,
        seed: 3,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(
        graph.clone(),
        Sgd::new(0.9).unwrap(),
        Constant::new(0.05).unwrap(),
        config,
    )
    .unwrap();
    let names: Vec<&str> = trainer.params().iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        [
            "conv1.bias",
            "conv1.values",
            "conv2.centroids",
            "fc.bias",
            "fc.core.0",
            "fc.core.1"
        ]
    );
    trainer.fit(&train, &test, |_| {}).unwrap();
    let trained = trainer.graph().unwrap();
    let after = loss(&trained, &train);
    assert!(after < 0.7 * before, "loss {before} → {after}");

    // The pattern and the codes are those of the compressed network; the
    // stored values moved.
    match (op(&graph, "conv1"), op(&trained, "conv1")) {
        (Op::SparseConv(a), Op::SparseConv(b)) => {
            assert_eq!(a.filters().row_ptr(), b.filters().row_ptr());
            assert_eq!(a.filters().col_idx(), b.filters().col_idx());
            assert_ne!(a.filters().values(), b.filters().values());
            let dense = b.to_dense().unwrap();
            let zeros = |c: &ConvLayer| c.weight().array().iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros(&dense), zeros(&a.to_dense().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    match (op(&graph, "conv2"), op(&trained, "conv2")) {
        (Op::CodebookConv(a), Op::CodebookConv(b)) => {
            assert_eq!(a.codes(), b.codes());
            assert_ne!(a.codebooks(), b.codebooks());
            // Every dequantized weight is still one of the k centroids.
            let books = b.codebooks();
            assert!(b.dequantized().iter().all(|w| books.iter().any(|c| c == w)));
        }
        other => panic!("{other:?}"),
    }
    match (op(&graph, "fc"), op(&trained, "fc")) {
        (Op::TtLinear(a), Op::TtLinear(b)) => {
            assert_eq!(a.ranks(), b.ranks());
            assert_ne!(a.cores(), b.cores());
        }
        other => panic!("{other:?}"),
    }

    // The trained graph's reference forward is the trainer's forward.
    let tape = TrainTape::forward(
        &graph,
        trainer.params(),
        std::slice::from_ref(test.images()),
        Mode::Eval,
    )
    .unwrap();
    let want = trained.reference_forward(&[test.images()]).unwrap();
    let err = hasten_core::relative_error(&want[0], tape.outputs()[0]);
    assert!(err < 1e-5, "relative error {err:e}");
}
