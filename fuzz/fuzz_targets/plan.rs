//! Arbitrary bytes → convolution specs, ops and small graphs through their
//! public constructors, a fastconv `Plan` for them and one run: no panic,
//! constructors that refuse exactly the parameters their documentation
//! rules out, a plan that refuses a valid graph only for its size (typed
//! `Overflow` / `MemoryLimit`, never an allocation past its limit), and
//! outputs equal to the graph's reference forward (survey eq. (1); relative
//! error below 1e-4, as the property tests) whenever it runs.
#![no_main]

use hasten_core::graph::{Graph, GraphBuilder, Value};
use hasten_core::ndarray::{Array1, Array2, Array4};
use hasten_core::{
    memory, ActShape, AvgPool, BatchNorm, Block, ChannelGather, ChannelShuffle, Clip, ConvLayer,
    ConvSpec, Dropout, Error, Flatten, GlobalAvgPool, Identity, LinearLayer, MaxPool, Op, Pad,
    Padding, PoolSpec, Relu, SeededRng, Shift, Sigmoid, Softmax,
};
use hasten_fastconv::{Isa, Plan, PlanOptions, Winograd};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The plan's own memory limit: small, so that sizes from the bytes reach it.
const PLAN_LIMIT: u64 = 4 << 20;
/// The reference forward's limit (it keeps f64 copies and im2col columns).
const REFERENCE_LIMIT: u64 = 64 << 20;
/// Relative tolerance of f32 kernels against the f64-accumulating reference.
const TOL: f32 = 1e-4;
/// The most multiply–accumulates (batch included) a case may run, so that
/// every input takes milliseconds and a bounded run explores many.
const MAX_MACS: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    memory::set_limit(REFERENCE_LIMIT);
    let _ = case(&mut Unstructured::new(data));
});

/// A size: mostly `0..=small`, sometimes a moderate or a huge power of two
/// or a huge `usize` (to reach the overflow and memory-limit paths). Sizes
/// between 2⁷ and 2³¹ are left out: a padding or dilation of that size is
/// valid and within the memory limit, but the depthwise kernel's work grows
/// with the padded plane, not with the MACs the run is capped by, so such a
/// case takes seconds and would stall a bounded run.
fn size(u: &mut Unstructured, small: usize) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => match u.arbitrary::<usize>()? {
            v if v >> 32 == 0 => v % (small + 1),
            v => v,
        },
        1 => 1usize << *u.choose(&[4u32, 5, 6, 32, 40, 48, 62, 63])?,
        _ => u.int_in_range(0..=small)?,
    })
}

fn padding(u: &mut Unstructured, small: usize) -> Result<Padding> {
    Ok(Padding {
        top: size(u, small)?,
        bottom: size(u, small)?,
        left: size(u, small)?,
        right: size(u, small)?,
    })
}

/// One case: a single convolution block (also through `forward`) or a graph.
fn case(u: &mut Unstructured) -> Result<()> {
    let isa = *u.choose(&[Isa::Avx512, Isa::Avx2, Isa::Scalar])?;
    let options = PlanOptions {
        isa: if isa.is_supported() { isa } else { Isa::Scalar },
        winograd: *u.choose(&[Winograd::Off, Winograd::Auto, Winograd::Always, Winograd::F2])?,
        fuse: u.arbitrary()?,
        memory_limit: PLAN_LIMIT,
    };
    let batch = u.int_in_range(0..=3)?;
    let mut rng = SeededRng::new(u.arbitrary()?);
    let input = ActShape::new(
        u.int_in_range(0..=8)?,
        u.int_in_range(0..=12)?,
        u.int_in_range(0..=12)?,
    );
    if u.arbitrary()? {
        let Some(layer) = conv(u, &mut rng, input.channels)? else {
            return Ok(());
        };
        let mut ops: Vec<Op> = vec![layer.into()];
        if u.arbitrary()? {
            ops.push(Relu.into());
        }
        let block = Block::new(ops).expect("a block of one or two ops");
        let shapes_ok = block.shapes(input).is_ok();
        let plan = Plan::with_options(&block, input, batch, options);
        let macs = block.cost(input).map(|c| c.macs).ok();
        check_plan(plan, shapes_ok, batch, input, macs, &mut rng, |x| {
            let y = block.reference_forward(x)?;
            // `forward` (default options) agrees with the plan and the reference.
            let fast = hasten_fastconv::forward(&block, x).expect("the plan ran, so does forward");
            compare(&fast, &y);
            Ok(vec![y])
        });
    } else {
        let Some(graph) = graph(u, &mut rng, input)? else {
            return Ok(());
        };
        let plan = Plan::for_graph(&graph, batch, options);
        let macs = graph.cost().map(|c| c.macs).ok();
        check_plan(plan, true, batch, input, macs, &mut rng, |x| {
            graph.reference_forward(&[x])
        });
    }
    Ok(())
}

/// The checks on a compiled (or refused) plan: `valid` says whether the
/// shapes are valid, so that only a size may make it fail; when it compiled,
/// a run on a random input equals `reference`, and an input of another
/// shape is an error. Cases above [`MAX_MACS`] are compiled, not run.
fn check_plan(
    plan: hasten_core::Result<Plan>,
    valid: bool,
    batch: usize,
    input: ActShape,
    macs: Option<u64>,
    rng: &mut SeededRng,
    reference: impl FnOnce(&Array4<f32>) -> hasten_core::Result<Vec<Array4<f32>>>,
) {
    let mut plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            let refusable = !valid || batch == 0 || input.is_empty() || is_size_refusal(&e);
            assert!(refusable, "a valid graph was refused: {e}");
            return;
        }
    };
    assert!(valid && batch > 0, "a plan compiled for invalid shapes");
    assert!(
        plan.peak_activation_bytes() as u64 <= PLAN_LIMIT,
        "the arena exceeds the plan's memory limit"
    );
    if macs.is_none_or(|m| m.saturating_mul(batch as u64) > MAX_MACS) {
        return;
    }
    let x: Array4<f32> = rng.normal_array(input.batched(batch), 1.0);
    let wrong: Array4<f32> =
        Array4::zeros(ActShape::new(input.channels + 1, input.height, input.width).batched(batch));
    assert!(
        plan.run(&wrong).is_err(),
        "a plan ran an input of another shape"
    );
    let got = plan
        .run_all(&[&x])
        .expect("a compiled plan runs its own shape")
        .to_vec();
    match reference(&x) {
        Ok(want) => {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                compare(g, w);
            }
        }
        // Only the reference's own memory limit excuses it.
        Err(e) => assert!(is_size_refusal(&e), "the reference failed: {e}"),
    }
}

/// `got` equals `want` within [`TOL`] of the largest reference magnitude.
fn compare(got: &Array4<f32>, want: &Array4<f32>) {
    assert_eq!(got.shape(), want.shape());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(want) {
        let same = (a - b).abs() <= TOL * scale || (a.is_nan() && b.is_nan());
        assert!(same, "plan {a} vs reference {b}");
    }
}

/// Whether `e`, or an error it wraps, is a size refusal.
fn is_size_refusal(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let core = err
            .downcast_ref::<Error>()
            .or_else(|| err.downcast_ref::<Box<Error>>().map(|b| &**b));
        if matches!(
            core,
            Some(Error::Overflow { .. } | Error::MemoryLimit { .. })
        ) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A convolution on `c_in` channels with parameters from the bytes; `None`
/// when its constructor refused them, which it must do exactly when a size
/// is zero or the filters do not split into the groups.
fn conv(u: &mut Unstructured, rng: &mut SeededRng, c_in: usize) -> Result<Option<ConvLayer>> {
    let divisors: Vec<usize> = (1..=c_in).filter(|&g| c_in.is_multiple_of(g)).collect();
    let groups = match divisors.is_empty() || u.ratio(1u8, 4)? {
        true => size(u, 4)?,
        false => *u.choose(&divisors)?,
    };
    let c_g = if groups > 0 && c_in.is_multiple_of(groups) && !u.ratio(1u8, 8)? {
        c_in / groups
    } else {
        u.int_in_range(0..=4)?
    };
    let t = u.int_in_range(0..=3)? * groups.clamp(1, 8) + usize::from(u.ratio(1u8, 8)?);
    let (kh, kw) = (u.int_in_range(0..=5)?, u.int_in_range(0..=5)?);
    let spec = ConvSpec {
        stride: (size(u, 3)?, size(u, 3)?),
        padding: padding(u, 3)?,
        dilation: (size(u, 3)?, size(u, 3)?),
        groups,
    };
    let fits = t * c_g * kh * kw <= 4096;
    if !fits {
        return Ok(None);
    }
    let scale = 1.0 / ((c_g * kh * kw).max(1) as f64).sqrt();
    let weight = rng.normal_array((t, c_g, kh, kw), scale);
    let bias: Option<Array1<f32>> = u.arbitrary::<bool>()?.then(|| rng.normal_array(t, 0.5));
    let made = hasten_core::Conv4d::new(weight).and_then(|w| ConvLayer::new(w, bias, spec));
    let allowed = t > 0
        && c_g > 0
        && kh > 0
        && kw > 0
        && spec.stride.0 > 0
        && spec.stride.1 > 0
        && spec.dilation.0 > 0
        && spec.dilation.1 > 0
        && groups > 0
        && t.is_multiple_of(groups);
    assert_eq!(
        made.is_ok(),
        allowed,
        "ConvLayer::new on {spec:?}: {made:?}"
    );
    Ok(made.ok())
}

/// A pooling spec; `valid` says whether its documentation allows it.
fn pool_spec(u: &mut Unstructured) -> Result<(PoolSpec, bool)> {
    let spec = PoolSpec::new(u.int_in_range(0..=4)?, u.int_in_range(0..=4)?)
        .with_stride_hw(size(u, 3)?, size(u, 3)?)
        .with_padding_sides(padding(u, 2)?)
        .with_ceil_mode(u.arbitrary()?);
    let p = spec.padding;
    let valid = spec.kernel.0 > 0
        && spec.kernel.1 > 0
        && spec.stride.0 > 0
        && spec.stride.1 > 0
        && p.top.max(p.bottom) < spec.kernel.0
        && p.left.max(p.right) < spec.kernel.1;
    Ok((spec, valid))
}

/// A unary op for an input of `shape`, from the bytes; `None` when its
/// constructor refused the parameters (checked against the documented rule
/// where one is stated).
fn unary(u: &mut Unstructured, rng: &mut SeededRng, shape: ActShape) -> Result<Option<Op>> {
    // Parameters sized by a huge (padded, flattened) shape are not built:
    // the plan's memory limit is checked on the ops that made it.
    let Some(len) = shape.checked_len().ok().filter(|&l| l <= 1 << 14) else {
        return Ok(None);
    };
    let c = shape.channels;
    let op: Option<Op> = match u.int_in_range(0u8..=14)? {
        0..=2 => conv(u, rng, c)?.map(Op::from),
        3 => Some(Relu.into()),
        4 => {
            let (min, max) = (
                f32::from(u.arbitrary::<i8>()?) / 16.0,
                f32::from(u.arbitrary::<i8>()?) / 16.0,
            );
            let made = Clip::new(min, max);
            assert_eq!(made.is_ok(), min <= max);
            made.ok().map(Op::from)
        }
        5 => {
            let n = if u.ratio(7u8, 8)? {
                c
            } else {
                u.int_in_range(0..=8)?
            };
            let bn = BatchNorm::new(
                rng.uniform_array(n, 0.5, 1.5),
                rng.normal_array(n, 0.5),
                rng.normal_array(n, 0.5),
                rng.uniform_array(n, 0.5, 1.5),
                1e-5,
            );
            assert_eq!(bn.is_ok(), n > 0);
            bn.ok().map(Op::from)
        }
        6 => {
            let (spec, valid) = pool_spec(u)?;
            let made = if u.arbitrary()? {
                MaxPool::new(spec).map(Op::from)
            } else {
                AvgPool::new(spec, u.arbitrary()?).map(Op::from)
            };
            assert_eq!(made.is_ok(), valid, "pooling {spec:?}: {made:?}");
            made.ok()
        }
        7 => Some(GlobalAvgPool.into()),
        8 => Pad::new(padding(u, 2)?, f32::from(u.arbitrary::<i8>()?) / 8.0)
            .ok()
            .map(Op::from),
        9 => {
            let groups = size(u, 4)?;
            let made = ChannelShuffle::new(groups);
            assert_eq!(made.is_ok(), groups > 0);
            made.ok().map(Op::from)
        }
        10 => {
            let n = if u.ratio(7u8, 8)? {
                c
            } else {
                u.int_in_range(0..=8)?
            };
            let mut offsets = Vec::with_capacity(n);
            for _ in 0..n {
                offsets.push((u.int_in_range(-2..=2)?, u.int_in_range(-2..=2)?));
            }
            let made = Shift::new(offsets);
            assert_eq!(made.is_ok(), n > 0);
            made.ok().map(Op::from)
        }
        11 => {
            let n = u.int_in_range(0..=8)?;
            let mut indices = Vec::with_capacity(n);
            for _ in 0..n {
                indices.push(u.int_in_range(0..=c)?);
            }
            let made = ChannelGather::new(indices.clone(), c);
            assert_eq!(made.is_ok(), n > 0 && indices.iter().all(|&i| i < c));
            made.ok().map(Op::from)
        }
        12 => Some(match u.int_in_range(0u8..=3)? {
            0 => Softmax.into(),
            1 => Sigmoid.into(),
            2 => Flatten.into(),
            _ => Identity.into(),
        }),
        13 => {
            let ratio = f32::from(u.arbitrary::<i8>()?) / 100.0;
            let made = Dropout::new(ratio);
            assert_eq!(made.is_ok(), (0.0..1.0).contains(&ratio));
            made.ok().map(Op::from)
        }
        _ => {
            let features = if u.ratio(7u8, 8)? {
                len
            } else {
                u.int_in_range(0..=64)?
            };
            let out = u.int_in_range(0..=6)?;
            if out * features > 1 << 16 {
                return Ok(None);
            }
            let w: Array2<f32> =
                rng.normal_array((out, features), 1.0 / (features.max(1) as f64).sqrt());
            let made = LinearLayer::new(w, None);
            assert_eq!(made.is_ok(), out > 0 && features > 0);
            made.ok().map(Op::from)
        }
    };
    Ok(op)
}

/// A graph of up to eight nodes over one input of shape `input`: unary ops,
/// residual adds, concatenations and products of the values made so far.
/// `None` when a constructor refused its parameters or the builder refused
/// the graph (shapes that do not fit: a typed error).
fn graph(u: &mut Unstructured, rng: &mut SeededRng, input: ActShape) -> Result<Option<Graph>> {
    let mut b = GraphBuilder::new();
    let x = b.input("x", input);
    let mut values: Vec<(Value, ActShape)> = vec![(x, input)];
    let nodes = u.int_in_range(1..=8)?;
    for n in 0..nodes {
        let name = format!("n{n}");
        let (v, s) = *u.choose(&values)?;
        // The output shape where the node is valid (else the builder
        // refuses the graph).
        let made = match u.int_in_range(0u8..=9)? {
            0 => {
                let (w, _) = *u.choose(&values)?;
                (b.add(name, &[v, w]), s)
            }
            1 => {
                let (w, sw) = *u.choose(&values)?;
                let channels = s.channels.saturating_add(sw.channels);
                (b.concat(name, &[v, w]), ActShape { channels, ..s })
            }
            2 => {
                let (w, _) = *u.choose(&values)?;
                (b.mul(name, v, w), s)
            }
            _ => {
                let Some(op) = unary(u, rng, s)? else {
                    return Ok(None);
                };
                let out = hasten_core::Operator::output_shape(&op, s).unwrap_or(s);
                (b.op(name, op, v), out)
            }
        };
        values.push(made);
    }
    b.output(values.last().expect("at least the input").0);
    Ok(b.build().ok())
}
