//! Batch-norm recalibration: after a transform (a decomposition, pruning,
//! quantization — the survey's §3–§6 methods all change the activations a
//! batch norm sees) its running statistics are stale. [`recalibrate_batch_norm`]
//! re-estimates them from data without touching any weight.
//!
//! It runs `batches` batches through the [`TrainTape`] in training mode
//! (each batch norm normalises with its batch statistics, as while
//! training) with the running-average momentum `1/(k+1)` on batch `k`, so
//! the running mean after `K` batches is the cumulative average
//! `(1/K) Σ_k μ_k` and the running variance `(1/K) Σ_k s²_k` of the
//! unbiased batch variances (PyTorch's `momentum=None`); the old statistics
//! are forgotten at the first batch. Dropout layers draw masks as in
//! training.

use hasten_core::grad::Mode;
use hasten_core::{Graph, SeededRng};

use crate::data::{Augment, Dataset, Loader};
use crate::error::{Result, TrainError};
use crate::params::ParamStore;
use crate::tape::TrainTape;

/// A copy of `graph` whose batch-norm running statistics are re-estimated
/// on (at most) the first `batches` batches of `batch_size` samples of
/// `data` (in order, no augmentation), the weights left as they are. Each
/// batch runs in training mode with running-average momentum `1/(k+1)` on
/// batch `k`, so the running mean and variance end as the cumulative
/// averages of the batch statistics (PyTorch's `momentum=None`). `seed`
/// seeds the dropout masks.
///
/// Errors: zero `batches` or `batch_size`, an empty data set, a graph with
/// other than one input, samples of another shape, a batch norm that sees
/// fewer than two values per channel in a batch.
pub fn recalibrate_batch_norm<D: Dataset + ?Sized>(
    graph: &Graph,
    data: &D,
    batch_size: usize,
    batches: usize,
    seed: u64,
) -> Result<Graph> {
    if batches == 0 {
        return Err(TrainError::invalid("recalibration batches", 0, ">= 1"));
    }
    if data.is_empty() {
        return Err(TrainError::invalid("data set size", 0, ">= 1"));
    }
    if graph.inputs().len() != 1 {
        return Err(TrainError::invalid(
            "graph inputs",
            graph.inputs().len(),
            "one input",
        ));
    }
    let loader = Loader::new(data.len(), batch_size)?;
    let mut store = ParamStore::from_graph(graph);
    for (k, indices) in loader.batches(0).into_iter().take(batches).enumerate() {
        let (x, _) = loader.collate(data, &indices, &Augment::default(), 0)?;
        let mode = Mode::Train {
            seed: SeededRng::new(seed).fork(k as u64).next_u64(),
            momentum: 1.0 / (k as f64 + 1.0),
        };
        let tape = TrainTape::forward(graph, &store, std::slice::from_ref(&x), mode)?;
        for (name, v) in tape.buffers() {
            match store.get_mut(name) {
                Some(slot) => *slot = v.clone(),
                None => store.insert(name.clone(), v.clone(), false)?,
            }
        }
    }
    store.apply_to(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageSet;
    use hasten_core::op::{BatchNorm, Flatten, GlobalAvgPool, Relu};
    use hasten_core::{ActShape, ConvLayer, ConvSpec, GraphBuilder, LinearLayer};
    use ndarray::{s, Array1, Array4, Axis};

    fn bn(c: usize, rng: &mut SeededRng) -> BatchNorm {
        BatchNorm::new(
            Array1::from_iter((0..c).map(|_| 1.0 + 0.2 * rng.uniform() as f32)),
            Array1::from_iter((0..c).map(|_| 0.3 * rng.uniform() as f32)),
            Array1::zeros(c),
            Array1::ones(c),
            1e-5,
        )
        .unwrap()
    }

    /// conv → bn → relu → conv → bn → global pool → flatten → linear, with
    /// stale statistics (mean 0, var 1).
    fn net() -> Graph {
        let mut rng = SeededRng::new(5);
        let mut b = GraphBuilder::new();
        let x = b.input("x", ActShape::new(2, 6, 6));
        let conv = |rng: &mut SeededRng, t, c| {
            ConvLayer::from_array(
                rng.normal_array((t, c, 3, 3), 0.6),
                ConvSpec::new().with_padding(1),
            )
            .unwrap()
        };
        let y = b.op("conv1", conv(&mut rng, 3, 2), x);
        let y = b.op("bn1", bn(3, &mut rng), y);
        let y = b.op("relu", Relu, y);
        let y = b.op("conv2", conv(&mut rng, 4, 3), y);
        let y = b.op("bn2", bn(4, &mut rng), y);
        let y = b.op("gap", GlobalAvgPool, y);
        let y = b.op("flatten", Flatten, y);
        let fc = LinearLayer::new(rng.normal_array((3, 4), 0.5), None).unwrap();
        let y = b.op("fc", fc, y);
        b.output(y);
        b.build().unwrap()
    }

    fn data(n: usize) -> ImageSet {
        let mut rng = SeededRng::new(8);
        // Offset and scaled, so the true statistics are far from (0, 1).
        let images = rng.normal_array((n, 2, 6, 6), 2.0).mapv(|v: f32| v + 1.5);
        ImageSet::new(images, vec![0; n], 3).unwrap()
    }

    /// Per channel, the mean and unbiased variance of an NCHW batch, in f64.
    fn stats(x: &Array4<f32>) -> (Vec<f64>, Vec<f64>) {
        let c = x.shape()[1];
        let m = (x.len() / c) as f64;
        (0..c)
            .map(|k| {
                let lane = x.index_axis(Axis(1), k);
                let mu = lane.iter().map(|&v| f64::from(v)).sum::<f64>() / m;
                let ss = lane
                    .iter()
                    .map(|&v| (f64::from(v) - mu).powi(2))
                    .sum::<f64>();
                (mu, ss / (m - 1.0))
            })
            .unzip()
    }

    fn close(what: &str, got: &ndarray::ArrayD<f32>, want: &[f64]) {
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let err = (f64::from(g) - w).abs() / w.abs().max(1.0);
            // f32 activations and statistics: a few ulps of the values.
            assert!(err < 1e-5, "{what}[{k}]: got {g}, closed form {w}");
        }
    }

    #[test]
    fn running_statistics_are_the_cumulative_average_of_the_batch_statistics() {
        let g = net();
        let set = data(24);
        let (batch, batches) = (8, 3);
        let out = recalibrate_batch_norm(&g, &set, batch, batches, 1).unwrap();
        let p = ParamStore::from_graph(&g);
        let (mut m1, mut v1) = (vec![0.0; 3], vec![0.0; 3]);
        let (mut m2, mut v2) = (vec![0.0; 4], vec![0.0; 4]);
        for k in 0..batches {
            let x = set
                .images()
                .slice(s![k * batch..(k + 1) * batch, .., .., ..])
                .to_owned();
            // bn1 sees conv1's output, taken from the reference forward.
            let trace = g.reference_trace(&[&x], &["conv1"]).unwrap();
            let a1 = &trace.captured["conv1"];
            let (mu, var) = stats(a1);
            // bn2 sees conv2(relu(bn1 with batch statistics)), built by hand.
            let gamma = p.get("bn1.weight").unwrap();
            let beta = p.get("bn1.bias").unwrap();
            let mut h = a1.clone();
            for c in 0..3 {
                let biased = var[c] * (a1.len() / 3 - 1) as f64 / (a1.len() / 3) as f64;
                let inv = 1.0 / (biased + 1e-5).sqrt();
                h.index_axis_mut(Axis(1), c).mapv_inplace(|v| {
                    let y =
                        f64::from(gamma[[c]]) * (f64::from(v) - mu[c]) * inv + f64::from(beta[[c]]);
                    y.max(0.0) as f32
                });
            }
            let a2 = g
                .node("conv2")
                .unwrap()
                .op()
                .reference_forward(&[&h])
                .unwrap();
            let (mu2, var2) = stats(&a2);
            for c in 0..3 {
                m1[c] += mu[c] / batches as f64;
                v1[c] += var[c] / batches as f64;
            }
            for c in 0..4 {
                m2[c] += mu2[c] / batches as f64;
                v2[c] += var2[c] / batches as f64;
            }
        }
        let q = ParamStore::from_graph(&out);
        close("bn1 mean", q.get("bn1.running_mean").unwrap(), &m1);
        close("bn1 var", q.get("bn1.running_var").unwrap(), &v1);
        close("bn2 mean", q.get("bn2.running_mean").unwrap(), &m2);
        close("bn2 var", q.get("bn2.running_var").unwrap(), &v2);
        // The statistics moved far from the stale (0, 1)…
        assert!(m1.iter().any(|m| m.abs() > 0.5));
        // …and nothing trainable changed.
        for (name, v, trainable) in p.iter() {
            if trainable {
                assert_eq!(q.get(name).unwrap(), v, "{name} changed");
            }
        }
    }

    #[test]
    fn batches_beyond_the_data_are_not_invented_and_bad_input_is_an_error() {
        let g = net();
        let set = data(10);
        // 100 batches asked, 2 exist (8 + 2): same as asking for 2.
        let a = recalibrate_batch_norm(&g, &set, 8, 100, 0).unwrap();
        let b = recalibrate_batch_norm(&g, &set, 8, 2, 0).unwrap();
        assert_eq!(a, b);
        assert!(recalibrate_batch_norm(&g, &set, 8, 0, 0).is_err());
        assert!(recalibrate_batch_norm(&g, &set, 0, 1, 0).is_err());
        let wrong = ImageSet::new(Array4::zeros((4, 1, 6, 6)), vec![0; 4], 3).unwrap();
        assert!(recalibrate_batch_norm(&g, &wrong, 2, 1, 0).is_err());
    }
}
