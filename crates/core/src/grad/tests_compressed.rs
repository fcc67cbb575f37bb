//! Gradient tests of the compressed ops: every backward against central
//! finite differences of the f64 forward (input and every stored value),
//! every f64 forward against the op's own f32 reference forward, and a
//! graph of compressed ops through the tape and the parameter write-back.

use ndarray::{Array2, Array3, Array4};

use super::tests::{assert_close, check_matches_reference, check_op, conv, f64_params};
use super::*;
use crate::bits::PackedCodes;
use crate::graph::GraphBuilder;
use crate::layer::{ConvLayer, LinearLayer};
use crate::op::*;
use crate::rng::SeededRng;
use crate::shape::ActShape;
use crate::spec::ConvSpec;

fn check(what: &str, op: &Op, x: &Array4<f64>, rng: &mut SeededRng) {
    check_matches_reference(what, op, x);
    check_op(what, op, x, Mode::Eval, rng);
}

fn conv_layer(rng: &mut SeededRng, o: usize, i: usize, k: usize, spec: ConvSpec) -> ConvLayer {
    match conv(rng, o, i, (k, k), spec, true) {
        Op::Conv(c) => c,
        _ => unreachable!(),
    }
}

fn codes(rng: &mut SeededRng, rows: usize, cols: usize, k: usize) -> (Vec<u32>, PackedCodes) {
    let idx: Vec<u32> = (0..rows * cols).map(|_| rng.below(k) as u32).collect();
    let bits = crate::bits::bits_for(k);
    let packed = PackedCodes::pack(&idx, rows, cols, bits).unwrap();
    (idx, packed)
}

fn specs() -> [ConvSpec; 2] {
    [
        ConvSpec::new().with_padding(1),
        ConvSpec::new().with_stride(2).with_padding(1),
    ]
}

#[test]
fn sparse_ops_match_finite_differences() {
    let mut rng = SeededRng::new(20);
    for spec in specs() {
        let mut dense = conv_layer(&mut rng, 3, 2, 3, spec);
        let mut w = dense.weight().array().clone();
        w.mapv_inplace(|v| if v.abs() < 0.3 { 0.0 } else { v });
        dense =
            ConvLayer::new(crate::Conv4d::new(w).unwrap(), dense.bias().cloned(), spec).unwrap();
        let op = Op::SparseConv(SparseConv::from_conv(&dense).unwrap());
        let x = rng.normal_array_f64([2, 2, 5, 5], 1.0);
        check("sparse conv", &op, &x, &mut rng);
        // The gradient has one entry per stored value: removed weights are
        // not parameters.
        let p = op_params(&op);
        let nnz = match &op {
            Op::SparseConv(s) => s.filters().nnz(),
            _ => unreachable!(),
        };
        assert!(nnz < 54, "the test must prune something");
        assert_eq!(p["values"].shape(), &[nnz]);
    }
    let mut w: Array2<f32> = rng.normal_array((4, 18), 1.0);
    w.mapv_inplace(|v| if v.abs() < 0.5 { 0.0 } else { v });
    let lin = LinearLayer::new(w, Some(rng.normal_array(4, 0.5))).unwrap();
    let op = Op::SparseLinear(SparseLinear::from_linear(&lin).unwrap());
    check(
        "sparse linear",
        &op,
        &rng.normal_array_f64([3, 2, 3, 3], 1.0),
        &mut rng,
    );
}

#[test]
fn codebook_and_product_quantization_match_finite_differences() {
    let mut rng = SeededRng::new(21);
    for (spec, groups) in [(specs()[0], 1), (specs()[1], 3)] {
        let layout = WeightLayout::conv([3, 2, 3, 3], spec).unwrap();
        let (_, packed) = codes(&mut rng, 3, 18, 4);
        let books: Array2<f32> = rng.normal_array((groups, 4), 1.0);
        let op = Op::CodebookConv(
            CodebookConv::new(layout, packed, books, Some(rng.normal_array(3, 0.5))).unwrap(),
        );
        check(
            "codebook conv",
            &op,
            &rng.normal_array_f64([2, 2, 5, 5], 1.0),
            &mut rng,
        );
    }
    // Grouped convolution with a linear-layout sibling.
    let layout = WeightLayout::conv([4, 1, 3, 3], ConvSpec::new().with_groups(2)).unwrap();
    let (_, packed) = codes(&mut rng, 4, 9, 3);
    let op = Op::CodebookConv(
        CodebookConv::new(layout, packed, rng.normal_array((1, 3), 1.0), None).unwrap(),
    );
    check(
        "grouped codebook conv",
        &op,
        &rng.normal_array_f64([2, 2, 4, 4], 1.0),
        &mut rng,
    );
    // Product quantization: s = 3 sub-blocks of d = 6 columns, k = 2.
    let layout = WeightLayout::conv([4, 2, 3, 3], specs()[1]).unwrap();
    let (_, packed) = codes(&mut rng, 3, 4, 2);
    let books: Array3<f32> = rng.normal_array((3, 2, 6), 1.0);
    let op = Op::ProductQuantizedConv(
        ProductQuantizedConv::new(layout, packed, books, Some(rng.normal_array(4, 0.5))).unwrap(),
    );
    check(
        "pq conv",
        &op,
        &rng.normal_array_f64([2, 2, 5, 5], 1.0),
        &mut rng,
    );
    let layout = WeightLayout::linear(3, 8).unwrap();
    let (_, packed) = codes(&mut rng, 2, 3, 3);
    let op = Op::ProductQuantizedConv(
        ProductQuantizedConv::new(layout, packed, rng.normal_array((2, 3, 4), 1.0), None).unwrap(),
    );
    check(
        "pq linear",
        &op,
        &rng.normal_array_f64([2, 8, 1, 1], 1.0),
        &mut rng,
    );
}

/// Deep compression's rule by hand: a centroid's gradient is the sum of the
/// weight gradients of its members.
#[test]
fn centroid_gradient_is_the_sum_over_its_members() {
    let mut rng = SeededRng::new(22);
    let layout = WeightLayout::linear(2, 3).unwrap();
    let idx = [0u32, 1, 0, 1, 1, 0];
    let packed = PackedCodes::pack(&idx, 2, 3, 1).unwrap();
    let books = Array2::from_shape_vec((1, 2), vec![0.5f32, -2.0]).unwrap();
    let op = Op::CodebookConv(CodebookConv::new(layout, packed, books, None).unwrap());
    let x = rng.normal_array_f64([2, 3, 1, 1], 1.0);
    let dy = rng.normal_array_f64([2, 2, 1, 1], 1.0);
    let g = backward(&op, &x, &dy, &op_params(&op), Mode::Eval).unwrap();
    // ∂L/∂W[t, j] = Σ_n dy[n, t] x[n, j].
    let dw = |t: usize, j: usize| {
        (0..2)
            .map(|n| dy[[n, t, 0, 0]] * x[[n, j, 0, 0]])
            .sum::<f64>()
    };
    let mut want = [0.0; 2];
    for t in 0..2 {
        for j in 0..3 {
            want[idx[t * 3 + j] as usize] += dw(t, j);
        }
    }
    let got = &g.params["centroids"];
    for c in 0..2 {
        assert!((got[[0, c]] - want[c]).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn binary_ternary_and_fixed_point_scales_match_finite_differences() {
    let mut rng = SeededRng::new(23);
    for spec in specs() {
        let layout = WeightLayout::conv([3, 2, 3, 3], spec).unwrap();
        let (_, signs) = codes(&mut rng, 3, 18, 2);
        let alpha = rng.normal_array(3, 0.5).mapv(|v: f32| v.abs() + 0.1);
        let op = Op::BinaryConv(
            BinaryConv::new(layout, signs, alpha, Some(rng.normal_array(3, 0.5)), false).unwrap(),
        );
        check(
            "binary conv",
            &op,
            &rng.normal_array_f64([2, 2, 5, 5], 1.0),
            &mut rng,
        );
        let (_, ternary) = codes(&mut rng, 3, 18, 3);
        let ternary = PackedCodes::pack(
            &(0..54)
                .map(|i| ternary.get(i / 18, i % 18).unwrap())
                .collect::<Vec<_>>(),
            3,
            18,
            2,
        )
        .unwrap();
        let op = Op::TernaryConv(
            TernaryConv::new(layout, ternary, rng.normal_array(3, 0.5), None).unwrap(),
        );
        check(
            "ternary conv",
            &op,
            &rng.normal_array_f64([2, 2, 5, 5], 1.0),
            &mut rng,
        );
        for groups in [1, 3] {
            let (_, fixed) = codes(&mut rng, 3, 18, 8);
            let op = Op::FixedPointConv(
                FixedPointConv::new(
                    layout,
                    fixed,
                    rng.normal_array(groups, 0.2),
                    rng.normal_array(groups, 0.2),
                    Some(rng.normal_array(3, 0.5)),
                )
                .unwrap(),
            );
            check(
                "fixed-point conv",
                &op,
                &rng.normal_array_f64([2, 2, 5, 5], 1.0),
                &mut rng,
            );
        }
    }
}

#[test]
fn pruned_structures_and_shift_match_finite_differences() {
    let mut rng = SeededRng::new(24);
    for spec in specs() {
        let dense = conv_layer(&mut rng, 3, 2, 3, spec);
        let taps = vec![(0, 0, 1), (0, 1, 1), (1, 0, 0), (1, 2, 2)];
        let op = Op::GroupwiseConv(GroupwiseConv::from_conv(&dense, taps).unwrap());
        check(
            "group-wise conv",
            &op,
            &rng.normal_array_f64([2, 2, 5, 5], 1.0),
            &mut rng,
        );
    }
    // Perforation: a 5×5 output plane with every other position evaluated,
    // on a grouped, strided convolution.
    let dense = conv_layer(
        &mut rng,
        4,
        4,
        3,
        ConvSpec::new().with_padding(1).with_groups(2),
    );
    let mask: Vec<bool> = (0..25).map(|k| k % 3 == 0).collect();
    let op = Op::PerforatedConv(PerforatedConv::new(dense, (5, 5), mask).unwrap());
    check(
        "perforated conv",
        &op,
        &rng.normal_array_f64([2, 4, 5, 5], 1.0),
        &mut rng,
    );
    let dense = conv_layer(&mut rng, 2, 2, 3, specs()[1]);
    let mask: Vec<bool> = (0..9).map(|k| k == 0 || k == 8).collect();
    let op = Op::PerforatedConv(PerforatedConv::new(dense, (3, 3), mask).unwrap());
    check(
        "strided perforated conv",
        &op,
        &rng.normal_array_f64([2, 2, 5, 5], 1.0),
        &mut rng,
    );
    let op = Op::Shift(Shift::new(vec![(1, -1), (0, 2), (-2, 0)]).unwrap());
    check(
        "shift",
        &op,
        &rng.normal_array_f64([2, 3, 4, 4], 1.0),
        &mut rng,
    );
}

#[test]
fn lcnn_and_tensor_train_match_finite_differences() {
    let mut rng = SeededRng::new(25);
    // LCNN: 3 filters 3×3 over 2 channels, a dictionary of 3 rows, one or
    // two taps per slice.
    for spec in specs() {
        let layout = WeightLayout::conv([3, 2, 3, 3], spec).unwrap();
        let mut offsets = vec![0u32];
        let mut indices = Vec::new();
        for r in 0..27 {
            let n = 1 + r % 2;
            for e in 0..n {
                indices.push(((r + e) % 3) as u16);
            }
            offsets.push(indices.len() as u32);
        }
        let coeffs: Vec<f32> = (0..indices.len()).map(|_| rng.normal() as f32).collect();
        let op = Op::LcnnConv(
            LcnnConv::new(
                layout,
                rng.normal_array((3, 2), 1.0),
                offsets,
                indices,
                coeffs,
                Some(rng.normal_array(3, 0.5)),
            )
            .unwrap(),
        );
        check(
            "lcnn conv",
            &op,
            &rng.normal_array_f64([2, 2, 5, 5], 1.0),
            &mut rng,
        );
    }
    // TT: out 2·3·2 = 12, in 3·2·2 = 12, ranks 1-2-3-1.
    let cores = vec![
        rng.normal_array((1, 2, 3, 2), 0.7),
        rng.normal_array((2, 3, 2, 3), 0.7),
        rng.normal_array((3, 2, 2, 1), 0.7),
    ];
    let op = Op::TtLinear(TtLinear::new(cores, Some(rng.normal_array(12, 0.5))).unwrap());
    check(
        "tt linear",
        &op,
        &rng.normal_array_f64([2, 3, 2, 2], 1.0),
        &mut rng,
    );
    let one = vec![rng.normal_array((1, 3, 4, 1), 0.7)];
    let op = Op::TtLinear(TtLinear::new(one, None).unwrap());
    check(
        "one-core tt linear",
        &op,
        &rng.normal_array_f64([2, 4, 1, 1], 1.0),
        &mut rng,
    );
}

/// A small network of compressed ops: sparse conv → ReLU → codebook conv →
/// flatten → TT linear.
fn compressed_net(rng: &mut SeededRng) -> crate::Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(2, 5, 5));
    let mut w = conv_layer(rng, 3, 2, 3, specs()[0]);
    let pruned = w
        .weight()
        .array()
        .mapv(|v| if v.abs() < 0.3 { 0.0 } else { v });
    w = ConvLayer::new(
        crate::Conv4d::new(pruned).unwrap(),
        w.bias().cloned(),
        specs()[0],
    )
    .unwrap();
    let y = b.op("conv1", SparseConv::from_conv(&w).unwrap(), x);
    let y = b.op("relu", Relu, y);
    let layout = WeightLayout::conv([2, 3, 3, 3], specs()[1]).unwrap();
    let (_, packed) = codes(rng, 2, 27, 4);
    let cb = CodebookConv::new(layout, packed, rng.normal_array((1, 4), 0.5), None).unwrap();
    let y = b.op("conv2", cb, y);
    let y = b.op("flatten", Flatten, y);
    let tt = TtLinear::new(
        vec![
            rng.normal_array((1, 2, 3, 2), 0.7),
            rng.normal_array((2, 2, 6, 1), 0.7),
        ],
        Some(rng.normal_array(4, 0.1)),
    )
    .unwrap();
    let y = b.op("fc", tt, y);
    b.output(y);
    b.build().unwrap()
}

#[test]
fn compressed_graph_trains_its_stored_values_and_writes_them_back() {
    let mut rng = SeededRng::new(26);
    let graph = compressed_net(&mut rng);
    let names: Vec<String> = graph.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "conv1.values",
            "conv1.bias",
            "conv2.centroids",
            "fc.core.0",
            "fc.core.1",
            "fc.bias"
        ]
    );
    let params = f64_params(&graph);
    let x = rng.normal_array_f64([2, 2, 5, 5], 1.0);
    let tape = Tape::forward(&graph, &params, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let want = graph.reference_forward(&[&x.mapv(|v| v as f32)]).unwrap();
    assert!(crate::relative_error(&want[0], &tape.outputs()[0].mapv(|v| v as f32)) < 1e-5);
    let r = rng.normal_array_f64(tape.outputs()[0].raw_dim(), 1.0);
    let grads = tape.backward(std::slice::from_ref(&r)).unwrap();
    let loss = |p: &Params| {
        let t = Tape::forward(&graph, p, std::slice::from_ref(&x), Mode::Eval).unwrap();
        (t.outputs()[0] * &r).sum()
    };
    for name in &names {
        let (err, peak) = check::gradient_error(&params[name], &grads.params[name], |v| {
            let mut q = params.clone();
            q.insert(name.clone(), v.clone());
            loss(&q)
        });
        assert_close(&format!("graph {name}"), err, peak);
    }
    // New values written back (as `graph_with_params` and
    // `Graph::set_parameters` do) give the graph the tape runs with them,
    // and keep the structure: same pattern, same codes.
    let stepped: Params = params
        .iter()
        .map(|(k, v)| (k.clone(), v - &(&grads.params[k] * 0.01)))
        .collect();
    let trained = graph_with_params(&graph, &stepped).unwrap();
    let tape = Tape::forward(&graph, &stepped, std::slice::from_ref(&x), Mode::Eval).unwrap();
    let got = trained.reference_forward(&[&x.mapv(|v| v as f32)]).unwrap();
    assert!(crate::relative_error(&got[0], &tape.outputs()[0].mapv(|v| v as f32)) < 1e-5);
    let mut loaded = graph.clone();
    let f32_params: Vec<(String, ndarray::ArrayD<f32>)> = stepped
        .iter()
        .map(|(k, v)| (k.clone(), v.mapv(|x| x as f32)))
        .collect();
    loaded.load_parameters(&f32_params).unwrap();
    assert_eq!(loaded, trained);
    let op = |g: &crate::Graph, n: &str| g.node(n).unwrap().op().as_op().unwrap().clone();
    match (op(&graph, "conv1"), op(&trained, "conv1")) {
        (Op::SparseConv(a), Op::SparseConv(b)) => {
            assert_eq!(a.filters().col_idx(), b.filters().col_idx());
            assert_eq!(a.filters().row_ptr(), b.filters().row_ptr());
            assert_ne!(a.filters().values(), b.filters().values());
        }
        _ => unreachable!(),
    }
    match (op(&graph, "conv2"), op(&trained, "conv2")) {
        (Op::CodebookConv(a), Op::CodebookConv(b)) => {
            assert_eq!(a.codes(), b.codes());
            assert_ne!(a.codebooks(), b.codebooks());
        }
        _ => unreachable!(),
    }
    // A value of the wrong length is a typed error, not a panic.
    let mut bad = stepped.clone();
    bad.insert("conv1.values".into(), ndarray::ArrayD::zeros(vec![1]));
    assert!(graph_with_params(&graph, &bad).is_err());
    let wrong = vec![(
        "conv1.values".to_string(),
        ndarray::ArrayD::<f32>::zeros(vec![1]),
    )];
    assert!(loaded.set_parameters(&wrong).is_err());
}

/// The dense equivalent is the op's own dense layer (`to_dense`), and its
/// weight-gradient map checks its argument.
#[test]
fn dense_equivalent_is_the_dense_layer() {
    let mut rng = SeededRng::new(28);
    let mut w: Array2<f32> = rng.normal_array((3, 5), 1.0);
    w.mapv_inplace(|v| if v.abs() < 0.5 { 0.0 } else { v });
    let lin = LinearLayer::new(w.clone(), None).unwrap();
    let op = Op::SparseLinear(SparseLinear::from_linear(&lin).unwrap());
    let p = op_params(&op);
    let d = dense_equivalent(&op, &p).unwrap().unwrap();
    assert_eq!(d.layout, WeightLayout::linear(3, 5).unwrap());
    assert_eq!(d.weight, w.mapv(f64::from));
    assert!(d.bias.is_none());
    assert!(dense_weight_grads(&op, &p, &Array2::zeros((3, 4))).is_err());
    let g = dense_weight_grads(&op, &p, &Array2::ones((3, 5))).unwrap();
    assert_eq!(g["values"], ndarray::ArrayD::ones(p["values"].raw_dim()));
    let relu = Op::Relu(Relu);
    assert_eq!(dense_equivalent(&relu, &OpParams::new()).unwrap(), None);
    assert!(dense_weight_grads(&relu, &OpParams::new(), &Array2::zeros((1, 1))).is_err());
    // A missing stored value is a typed error.
    assert!(dense_equivalent(&op, &OpParams::new()).is_err());
}
