use super::*;
use hasten_core::grad::loss::softmax_cross_entropy;
use hasten_core::grad::Tape;
use hasten_core::graph::GraphBuilder;
use hasten_core::op::{
    AvgPool, BatchNorm, Clip, Dropout, Flatten, GlobalAvgPool, MaxPool, PoolSpec, Relu, Sigmoid,
};
use hasten_core::{ActShape, Conv4d, ConvLayer, ConvSpec, LinearLayer};
use hasten_models::ModelConfig;

/// `‖a − b‖ / ‖a‖` (0 when both vanish).
fn rel<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>, b: &ndarray::Array<f32, D>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let diff: f64 = a
        .iter()
        .zip(b.iter())
        .map(|(x, &y)| (x - f64::from(y)).powi(2))
        .sum();
    let norm: f64 = a.iter().map(|x| x * x).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

fn conv(
    rng: &mut SeededRng,
    o: usize,
    i: usize,
    k: usize,
    spec: ConvSpec,
    bias: bool,
) -> ConvLayer {
    let w = rng.normal_array((o, i / spec.groups, k, k), 0.5);
    let b = bias.then(|| rng.normal_array(o, 0.5));
    ConvLayer::new(Conv4d::new(w).unwrap(), b, spec).unwrap()
}

fn batch_norm(rng: &mut SeededRng, c: usize) -> BatchNorm {
    BatchNorm::new(
        rng.normal_array(c, 0.5) + 1.0,
        rng.normal_array(c, 0.5),
        rng.normal_array(c, 0.5),
        rng.uniform_array(c, 0.5, 2.0),
        1e-5,
    )
    .unwrap()
}

/// A DAG with every fast path and a few fallbacks (sigmoid, `Mul`).
fn small_dag(rng: &mut SeededRng) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("input", ActShape::new(2, 8, 8));
    // No bias before a batch norm: in training mode its gradient is exactly
    // zero, and a relative error of rounding noise means nothing.
    let stem = b.op(
        "conv1",
        conv(rng, 4, 2, 3, ConvSpec::new().with_padding(1), false),
        x,
    );
    let stem = b.op("bn1", batch_norm(rng, 4), stem);
    let stem = b.op("relu1", Relu, stem);
    let branch = b.op(
        "layer1.conv",
        conv(
            rng,
            4,
            4,
            3,
            ConvSpec::new().with_padding(1).with_groups(2),
            false,
        ),
        stem,
    );
    let branch = b.op("layer1.bn", batch_norm(rng, 4), branch);
    let branch = b.op("layer1.clip", Clip::new(-0.5, 1.5).unwrap(), branch);
    let res = b.add("layer1.add", &[branch, stem]);
    let squeeze = b.op("se.pool", GlobalAvgPool, res);
    let gate = b.op("se.fc", conv(rng, 4, 4, 1, ConvSpec::new(), true), squeeze);
    let gate = b.op("se.gate", Sigmoid, gate);
    let gated = b.mul("se.mul", res, gate);
    let side = b.op("side", conv(rng, 2, 4, 1, ConvSpec::new(), true), stem);
    let cat = b.concat("cat", &[gated, side, stem]);
    let pooled = b.op(
        "pool",
        MaxPool::new(PoolSpec::square(2).with_stride(2)).unwrap(),
        cat,
    );
    let pooled = b.op(
        "avg",
        AvgPool::new(PoolSpec::square(3).with_padding(1), false).unwrap(),
        pooled,
    );
    let pooled = b.op("drop", Dropout::new(0.3).unwrap(), pooled);
    let flat = b.op("flatten", Flatten, pooled);
    let head = b.op(
        "fc",
        LinearLayer::new(
            rng.normal_array((3, 160), 0.3),
            Some(rng.normal_array(3, 0.1)),
        )
        .unwrap(),
        flat,
    );
    b.output(head);
    b.output(res);
    b.build().unwrap()
}

/// Runs the f32 tape and the f64 reference on the same graph, inputs and
/// random output gradients; every output, gradient and buffer must agree
/// to 1e-4 relative error.
fn compare(what: &str, graph: &Graph, batch: usize, mode: Mode, seed: u64) {
    let mut rng = SeededRng::new(seed);
    let store = ParamStore::from_graph(graph);
    let inputs: Vec<Array4<f32>> = graph
        .inputs()
        .iter()
        .map(|i| rng.normal_array(i.shape().batched(batch), 1.0))
        .collect();
    let inputs64: Vec<Array4<f64>> = inputs.iter().map(|x| x.mapv(f64::from)).collect();
    let fast = TrainTape::forward(graph, &store, &inputs, mode).unwrap();
    let reference = Tape::forward(graph, &store.to_f64(), &inputs64, mode).unwrap();
    for (k, (a, b)) in reference.outputs().iter().zip(fast.outputs()).enumerate() {
        let e = rel(*a, b);
        assert!(e < 1e-4, "{what}: output {k} relative error {e}");
    }
    let rs: Vec<Array4<f32>> = fast
        .outputs()
        .iter()
        .map(|y| rng.normal_array(y.raw_dim(), 1.0))
        .collect();
    let rs64: Vec<Array4<f64>> = rs.iter().map(|r| r.mapv(f64::from)).collect();
    let gf = fast.backward(&rs).unwrap();
    let gr = reference.backward(&rs64).unwrap();
    for (k, (a, b)) in gr.inputs.iter().zip(&gf.inputs).enumerate() {
        let e = rel(a, b);
        assert!(e < 1e-4, "{what}: input gradient {k} relative error {e}");
    }
    assert_eq!(
        gr.params.keys().collect::<Vec<_>>(),
        gf.params.keys().collect::<Vec<_>>()
    );
    for (name, a) in &gr.params {
        let e = rel(a, &gf.params[name]);
        assert!(e < 1e-4, "{what}: gradient of {name} relative error {e}");
    }
    assert_eq!(
        reference.buffers().keys().collect::<Vec<_>>(),
        fast.buffers().keys().collect::<Vec<_>>()
    );
    for (name, a) in reference.buffers() {
        let e = rel(a, &fast.buffers()[name]);
        assert!(e < 1e-4, "{what}: buffer {name} relative error {e}");
    }
}

#[test]
fn small_graphs_match_the_reference_in_both_modes() {
    for seed in 0..3 {
        let graph = small_dag(&mut SeededRng::new(100 + seed));
        compare("dag eval", &graph, 3, Mode::Eval, seed);
        compare("dag train", &graph, 3, Mode::train(seed), seed);
    }
}

/// The loss and every parameter gradient through the loss on a model.
fn compare_loss(what: &str, graph: &Graph, batch: usize, mode: Mode) {
    let mut rng = SeededRng::new(7);
    let store = ParamStore::from_graph(graph);
    let x: Array4<f32> = rng.normal_array(graph.inputs()[0].shape().batched(batch), 1.0);
    let labels: Vec<usize> = (0..batch).map(|i| (i * 3) % 10).collect();
    let fast = TrainTape::forward(graph, &store, std::slice::from_ref(&x), mode).unwrap();
    let reference = Tape::forward(
        graph,
        &store.to_f64(),
        std::slice::from_ref(&x.mapv(f64::from)),
        mode,
    )
    .unwrap();
    let lf = softmax_cross_entropy(fast.outputs()[0].view(), &labels, 0.0f32).unwrap();
    let lr = softmax_cross_entropy(reference.outputs()[0].view(), &labels, 0.0f64).unwrap();
    let e = (lr.value - f64::from(lf.value)).abs() / lr.value.abs();
    assert!(e < 1e-4, "{what}: loss relative error {e}");
    let e = rel(reference.outputs()[0], fast.outputs()[0]);
    assert!(e < 1e-4, "{what}: logits relative error {e}");
    let gf = fast.backward(&[lf.grad]).unwrap();
    let gr = reference.backward(&[lr.grad]).unwrap();
    assert_eq!(gr.params.len(), gf.params.len());
    for (name, a) in &gr.params {
        let e = rel(a, &gf.params[name]);
        assert!(e < 1e-4, "{what}: gradient of {name} relative error {e}");
    }
    for (name, a) in reference.buffers() {
        let e = rel(a, &fast.buffers()[name]);
        assert!(e < 1e-4, "{what}: buffer {name} relative error {e}");
    }
}

#[test]
fn lenet5_matches_the_reference() {
    let graph = hasten_models::lenet5(&ModelConfig::mnist()).unwrap();
    compare_loss("lenet5", &graph, 4, Mode::train(1));
}

#[test]
fn resnet8_matches_the_reference_in_both_modes() {
    let graph = hasten_models::resnet8(&ModelConfig::cifar10()).unwrap();
    compare_loss("resnet8 train", &graph, 2, Mode::train(3));
    compare_loss("resnet8 eval", &graph, 2, Mode::Eval);
}

fn run_with_threads(threads: usize, graph: &Graph) -> (Vec<Array4<f32>>, TapeGrads, Grads) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut rng = SeededRng::new(5);
        let store = ParamStore::from_graph(graph);
        let x: Array4<f32> = rng.normal_array(graph.inputs()[0].shape().batched(5), 1.0);
        let tape = TrainTape::forward(graph, &store, &[x], Mode::train(9)).unwrap();
        let rs: Vec<Array4<f32>> = tape
            .outputs()
            .iter()
            .map(|y| rng.normal_array(y.raw_dim(), 1.0))
            .collect();
        let g = tape.backward(&rs).unwrap();
        let outs = tape.outputs().into_iter().cloned().collect();
        (outs, g, tape.buffers().clone())
    })
}

#[test]
fn bit_identical_across_thread_counts() {
    let graph = small_dag(&mut SeededRng::new(42));
    let one = run_with_threads(1, &graph);
    let two = run_with_threads(2, &graph);
    assert_eq!(one, two);
    let lenet = hasten_models::lenet5(&ModelConfig::mnist()).unwrap();
    assert_eq!(run_with_threads(1, &lenet), run_with_threads(2, &lenet));
}

#[test]
fn bad_inputs_and_parameters_are_typed_errors() {
    let graph = small_dag(&mut SeededRng::new(1));
    let store = ParamStore::from_graph(&graph);
    let bad = Array4::<f32>::zeros((2, 3, 8, 8));
    assert!(TrainTape::forward(&graph, &store, &[bad], Mode::Eval).is_err());
    assert!(TrainTape::forward(&graph, &store, &[], Mode::Eval).is_err());
    let mut wrong = store.clone();
    wrong
        .insert("fc.weight", ndarray::ArrayD::zeros(vec![2, 2]), true)
        .unwrap();
    let x = Array4::<f32>::zeros((2, 2, 8, 8));
    assert!(TrainTape::forward(&graph, &wrong, std::slice::from_ref(&x), Mode::Eval).is_err());
    let tape = TrainTape::forward(&graph, &store, &[x], Mode::Eval).unwrap();
    assert!(tape.backward(&[]).is_err());
    let wrong_grads = vec![Array4::zeros((1, 1, 1, 1)), Array4::zeros((1, 1, 1, 1))];
    assert!(tape.backward(&wrong_grads).is_err());
    // A training batch norm needs two values per channel.
    let one = Array4::<f32>::zeros((1, 4, 1, 1));
    let mut b = GraphBuilder::new();
    let i = b.input("x", ActShape::new(4, 1, 1));
    let y = b.op("bn", batch_norm(&mut SeededRng::new(2), 4), i);
    b.output(y);
    let g = b.build().unwrap();
    let s = ParamStore::from_graph(&g);
    assert!(TrainTape::forward(&g, &s, &[one], Mode::train(0)).is_err());
}

/// The compressed ops (sparse, codebook, product-quantized, ternary,
/// binary, fixed-point, group-wise, perforated, TT-linear) train through
/// the f32 kernels as the f64 reference does.
#[test]
fn compressed_ops_match_the_reference() {
    use hasten_core::op::{
        BinaryConv, CodebookConv, FixedPointConv, GroupwiseConv, PerforatedConv,
        ProductQuantizedConv, SparseConv, SparseLinear, TernaryConv, TtLinear, WeightLayout,
    };
    use hasten_core::{bits_for, PackedCodes};
    let mut rng = SeededRng::new(31);
    let pad = ConvSpec::new().with_padding(1);
    let mut codes = |rows: usize, cols: usize, k: usize| {
        let idx: Vec<u32> = (0..rows * cols).map(|_| rng.below(k) as u32).collect();
        PackedCodes::pack(&idx, rows, cols, bits_for(k)).unwrap()
    };
    let layout = |o: usize, i: usize, k: usize, spec: ConvSpec| {
        WeightLayout::conv([o, i, k, k], spec).unwrap()
    };
    let (c1, c2, c3, c4, c5) = (
        codes(4, 36, 4),
        codes(2, 4, 2),
        codes(4, 36, 3),
        codes(4, 36, 2),
        codes(4, 4, 16),
    );
    let mut rng = SeededRng::new(32);
    let dense = |rng: &mut SeededRng, o: usize, i: usize, k: usize, spec: ConvSpec| {
        let w: Array4<f32> = rng.normal_array((o, i, k, k), 0.4);
        let w = w.mapv(|v| if v.abs() < 0.2 { 0.0 } else { v });
        ConvLayer::new(
            Conv4d::new(w).unwrap(),
            Some(rng.normal_array(o, 0.1)),
            spec,
        )
        .unwrap()
    };
    let ternary_codes = {
        let v: Vec<u32> = (0..4 * 36)
            .map(|i| c3.get(i / 36, i % 36).unwrap())
            .collect();
        PackedCodes::pack(&v, 4, 36, 2).unwrap()
    };
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 6, 6));
    let y = b.op(
        "sparse",
        SparseConv::from_conv(&dense(&mut rng, 4, 2, 3, pad)).unwrap(),
        x,
    );
    let y = b.op("relu", Relu, y);
    let cb = CodebookConv::new(
        layout(4, 4, 3, pad),
        c1,
        rng.normal_array((4, 4), 0.3),
        None,
    );
    let y = b.op("codebook", cb.unwrap(), y);
    let pq = ProductQuantizedConv::new(
        layout(4, 4, 1, ConvSpec::new()),
        c2,
        rng.normal_array((2, 2, 2), 0.3),
        Some(rng.normal_array(4, 0.1)),
    );
    let y = b.op("pq", pq.unwrap(), y);
    let tern = TernaryConv::new(
        layout(4, 4, 3, pad),
        ternary_codes,
        rng.normal_array(4, 0.3),
        None,
    );
    let y = b.op("ternary", tern.unwrap(), y);
    let bin = BinaryConv::new(
        layout(4, 4, 3, pad.with_stride(2)),
        c4,
        rng.normal_array(4, 0.3),
        Some(rng.normal_array(4, 0.1)),
        false,
    );
    let y = b.op("binary", bin.unwrap(), y);
    let fixed = FixedPointConv::new(
        layout(4, 4, 1, ConvSpec::new()),
        c5,
        rng.normal_array(1, 0.05),
        rng.normal_array(1, 0.1),
        None,
    );
    let y = b.op("fixed", fixed.unwrap(), y);
    let taps = vec![(0, 0, 0), (1, 1, 1), (2, 2, 0), (3, 0, 2), (3, 1, 1)];
    let gw = GroupwiseConv::from_conv(&dense(&mut rng, 4, 4, 3, pad), taps).unwrap();
    let y = b.op("groupwise", gw, y);
    let mask: Vec<bool> = (0..9).map(|k| k % 2 == 0).collect();
    let perf = PerforatedConv::new(dense(&mut rng, 4, 4, 3, pad), (3, 3), mask).unwrap();
    let y = b.op("perforated", perf, y);
    let y = b.op("flatten", Flatten, y);
    let tt = TtLinear::new(
        vec![
            rng.normal_array((1, 2, 6, 2), 0.4),
            rng.normal_array((2, 3, 6, 1), 0.4),
        ],
        Some(rng.normal_array(6, 0.1)),
    )
    .unwrap();
    let y = b.op("tt", tt, y);
    let lin = LinearLayer::new(rng.normal_array((3, 6), 0.5), None).unwrap();
    let lin = lin.weight().mapv(|v| if v.abs() < 0.3 { 0.0 } else { v });
    let sl =
        SparseLinear::from_linear(&LinearLayer::new(lin, Some(rng.normal_array(3, 0.1))).unwrap());
    let y = b.op("head", sl.unwrap(), y);
    b.output(y);
    let graph = b.build().unwrap();
    compare("compressed eval", &graph, 3, Mode::Eval, 1);
    compare("compressed train", &graph, 3, Mode::train(2), 2);
}

/// The one-pass shifted batch statistics against the two-pass definition on
/// data far from zero (mean 10⁷, spread 10), where the unshifted one-pass
/// `Σx²/m − (Σx/m)²` loses about four digits even in f64.
#[test]
fn one_pass_batch_statistics_match_two_pass_far_from_zero() {
    let mut rng = SeededRng::new(61);
    let x: Array4<f32> = rng.normal_array((5, 3, 4, 3), 10.0) + 1.0e7;
    let xs = x.as_slice().unwrap();
    let (mean, var) = channel_stats(xs, 3, 12);
    for k in 0..3 {
        let lane: Vec<f64> = x
            .index_axis(Axis(1), k)
            .iter()
            .map(|&u| f64::from(u))
            .collect();
        let mu = lane.iter().sum::<f64>() / lane.len() as f64;
        let v = lane.iter().map(|u| (u - mu).powi(2)).sum::<f64>() / lane.len() as f64;
        assert!((mean[k] - mu).abs() <= 1e-12 * mu.abs(), "mean {k}");
        assert!(
            (var[k] - v).abs() <= 1e-9 * v,
            "variance {k}: {} vs {v}",
            var[k]
        );
    }
}

/// Batch norm forward and backward, both modes, on random shapes and
/// offsets against the f64 reference of `hasten_core::grad`, and
/// bit-identical for 1 and 3 threads.
#[test]
fn batch_norm_kernels_match_the_reference_on_random_shapes() {
    let mut rng = SeededRng::new(62);
    for case in 0..12u64 {
        let (n, c) = (1 + rng.below(5), 1 + rng.below(6));
        let (h, w) = (1 + rng.below(5), 2 + rng.below(4));
        let offset = rng.uniform_in(-5.0, 5.0) as f32;
        let op = Op::BatchNorm(batch_norm(&mut rng, c));
        let x: Array4<f32> = rng.normal_array((n, c, h, w), 1.5) + offset;
        let dy: Array4<f32> = rng.normal_array((n, c, h, w), 1.0);
        let v: OpValues = hasten_core::graph::op_parameters(&op)
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect();
        for mode in [Mode::train(case), Mode::Eval] {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (y, saved, buffers) = op_forward(&op, &x, &v, mode).unwrap();
                    let (dx, dp) = op_backward(&op, &x, &dy, &v, &saved, mode).unwrap();
                    (y, buffers, dx, dp)
                })
            };
            let (y, buffers, dx, dp) = run(1);
            let bits = |a: &Array4<f32>| a.iter().map(|u| u.to_bits()).collect::<Vec<_>>();
            let three = run(3);
            assert_eq!(bits(&y), bits(&three.0), "forward, 1 and 3 threads");
            assert_eq!(bits(&dx), bits(&three.2), "backward, 1 and 3 threads");
            assert_eq!((&buffers, &dp), (&three.1, &three.3));
            let p64 = to_f64_params(&v);
            let x64 = x.mapv(f64::from);
            let want = grad::forward(&op, &x64, &p64, mode).unwrap();
            let what = format!("case {case} {mode:?} {:?}", x.shape());
            assert!(rel(&want.output, &y) < 1e-5, "{what} forward");
            for (name, b) in &want.buffers {
                assert!(rel(b, &buffers[name]) < 1e-5, "{what} {name}");
            }
            let g = grad::backward(&op, &x64, &dy.mapv(f64::from), &p64, mode).unwrap();
            assert!(rel(&g.input, &dx) < 1e-4, "{what} dx");
            for name in ["weight", "bias"] {
                assert!(rel(&g.params[name], &dp[name]) < 1e-4, "{what} d{name}");
            }
        }
    }
}

/// Frozen int8 layers (a requantized, per-channel convolution and a linear
/// head) train on the f32 kernels: outputs, input and parameter gradients
/// as the f64 reference tape's, the output the graph's integer reference
/// forward bit for bit, and no node falls back to the f64 reference —
/// while an op without an f32 path is named (the sigmoid of `small_dag`).
#[test]
fn int8_layers_run_on_the_f32_path_and_fallbacks_are_named() {
    use hasten_core::op::{Int8Conv, IntType, QuantParams, WeightLayout};
    let mut rng = SeededRng::new(61);
    let mut codes = |rows: usize, cols: usize| {
        Array2::from_shape_fn((rows, cols), |_| {
            (rng.uniform() * 255.0 - 127.0).round() as i8
        })
    };
    let spec = ConvSpec::new().with_padding(1).with_stride(2);
    let conv8 = Int8Conv::new(
        WeightLayout::conv([4, 2, 3, 3], spec).unwrap(),
        codes(4, 18),
        Array1::from_shape_fn(4, |t| 0.01 + 0.005 * t as f32),
        QuantParams::new(0.02, 0, IntType::I8).unwrap(),
        Some(Array1::from_shape_fn(4, |t| 100 * t as i32 - 150)),
        Some(QuantParams::new(0.05, 120, IntType::U8).unwrap()),
    )
    .unwrap();
    let head8 = Int8Conv::new(
        WeightLayout::linear(3, 64).unwrap(),
        codes(3, 64),
        Array1::from_elem(1, 0.004),
        QuantParams::new(0.04, 10, IntType::U8).unwrap(),
        None,
        None,
    )
    .unwrap();
    let mut b = GraphBuilder::new();
    let x = b.input("x", ActShape::new(2, 8, 8));
    let y = b.op("conv8", Op::Int8Conv(conv8), x);
    let y = b.op("relu", Relu, y);
    let y = b.op("flatten", Flatten, y);
    let y = b.op("head8", Op::Int8Conv(head8), y);
    b.output(y);
    let graph = b.build().unwrap();
    compare("int8", &graph, 3, Mode::train(3), 5);
    let store = ParamStore::from_graph(&graph);
    let x: Array4<f32> = SeededRng::new(9).normal_array([3, 2, 8, 8], 1.0);
    let tape = TrainTape::forward(&graph, &store, std::slice::from_ref(&x), Mode::Eval).unwrap();
    assert!(tape.reference_nodes().is_empty());
    let want = graph.reference_forward(&[&x]).unwrap().remove(0);
    assert_eq!(tape.outputs()[0], &want);
    let dag = small_dag(&mut SeededRng::new(100));
    let store = ParamStore::from_graph(&dag);
    let x: Array4<f32> = SeededRng::new(9).normal_array([2, 2, 8, 8], 1.0);
    let tape = TrainTape::forward(&dag, &store, std::slice::from_ref(&x), Mode::Eval).unwrap();
    assert_eq!(tape.reference_nodes(), ["se.gate"]);
}
