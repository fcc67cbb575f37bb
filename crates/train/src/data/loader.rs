//! [`Loader`]: seeded shuffling and batching of a [`Dataset`].

use std::sync::mpsc::sync_channel;

use hasten_core::SeededRng;
use ndarray::{s, Array4};

use super::{Augment, Dataset};
use crate::error::{Result, TrainError};

/// Splits `0..len` into batches each epoch, in order or shuffled by a seed
/// (the permutation of epoch `e` depends only on the seed and `e`), and
/// assembles batches with per-sample augmentation whose randomness depends
/// only on the seed, the epoch and the sample index — so a batch is the
/// same whatever thread builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loader {
    len: usize,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
}

impl Loader {
    /// Batches of `batch_size ≥ 1` over `len ≥ 1` samples, in order, the
    /// last batch possibly smaller.
    pub fn new(len: usize, batch_size: usize) -> Result<Self> {
        if len == 0 {
            return Err(TrainError::invalid("data set size", len, ">= 1"));
        }
        if batch_size == 0 {
            return Err(TrainError::invalid("batch size", batch_size, ">= 1"));
        }
        Ok(Loader {
            len,
            batch_size,
            seed: None,
            drop_last: false,
        })
    }

    /// Shuffles every epoch with a permutation drawn from `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Drops a last batch smaller than the batch size.
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn epoch_rng(&self, epoch: usize) -> SeededRng {
        SeededRng::new(self.seed.unwrap_or(0)).fork(epoch as u64)
    }

    /// The sample indices of every batch of epoch `epoch`.
    pub fn batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.seed.is_some() {
            self.epoch_rng(epoch).shuffle(&mut order);
        }
        order
            .chunks(self.batch_size)
            .filter(|b| !self.drop_last || b.len() == self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Stacks the samples `indices` of `data` into an NCHW batch with their
    /// labels, augmenting each with `augment` (randomness from the loader's
    /// seed, `epoch` and the sample index).
    pub fn collate<D: Dataset + ?Sized>(
        &self,
        data: &D,
        indices: &[usize],
        augment: &Augment,
        epoch: usize,
    ) -> Result<(Array4<f32>, Vec<usize>)> {
        if indices.is_empty() {
            return Err(TrainError::invalid("batch", "empty", "at least one index"));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(TrainError::invalid(
                "sample index",
                bad,
                "< the data set size",
            ));
        }
        let shape = data.sample_shape();
        let mut x = Array4::<f32>::zeros(shape.batched(indices.len()));
        let mut base = self.epoch_rng(epoch);
        let base_seed = base.next_u64();
        for (k, &i) in indices.iter().enumerate() {
            let sample = data.sample(i);
            if augment == &Augment::default() {
                x.slice_mut(s![k, .., .., ..]).assign(&sample);
            } else {
                let mut rng = SeededRng::new(base_seed).fork(i as u64);
                x.slice_mut(s![k, .., .., ..])
                    .assign(&augment.apply(sample, &mut rng)?);
            }
        }
        Ok((x, indices.iter().map(|&i| data.label(i)).collect()))
    }

    /// Runs `step` on every batch of epoch `epoch` in order, each batch
    /// collated as [`Loader::collate`] does, while a background thread
    /// collates up to `ahead ≥ 1` batches in advance (prefetching overlaps
    /// augmentation with training). The batches are exactly those of
    /// `collate`, so results do not depend on `ahead`. Stops at the first
    /// error of `collate` or `step` and returns it.
    ///
    /// ```
    /// use hasten_train::data::{Augment, ImageSet, Loader};
    /// use ndarray::Array4;
    ///
    /// let data = ImageSet::new(Array4::from_elem((5, 1, 2, 2), 1.0), vec![0, 1, 0, 1, 0], 2)?;
    /// let loader = Loader::new(5, 2)?;
    /// let mut sizes = Vec::new();
    /// loader.for_each_prefetched(&data, &Augment::default(), 0, 2, |x, labels| {
    ///     sizes.push((x.shape()[0], labels.len()));
    ///     Ok(())
    /// })?;
    /// assert_eq!(sizes, [(2, 2), (2, 2), (1, 1)]);
    /// # Ok::<(), hasten_train::TrainError>(())
    /// ```
    ///
    /// # Errors
    /// [`TrainError::Invalid`] for `ahead = 0`; otherwise the first error of
    /// `collate` or of `step`.
    pub fn for_each_prefetched<D, F>(
        &self,
        data: &D,
        augment: &Augment,
        epoch: usize,
        ahead: usize,
        mut step: F,
    ) -> Result<()>
    where
        D: Dataset + ?Sized,
        F: FnMut(Array4<f32>, Vec<usize>) -> Result<()>,
    {
        if ahead == 0 {
            return Err(TrainError::invalid("prefetch depth", ahead, ">= 1"));
        }
        let (send, receive) = sync_channel(ahead);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for indices in self.batches(epoch) {
                    let batch = self.collate(data, &indices, augment, epoch);
                    let failed = batch.is_err();
                    // The receiver is gone once `step` has failed: stop.
                    if send.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
            for batch in receive {
                let (x, labels) = batch?;
                step(x, labels)?;
            }
            Ok(())
        })
    }
}
