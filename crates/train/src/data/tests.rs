use std::io::Write;
use std::path::PathBuf;

use hasten_core::SeededRng;
use ndarray::{Array3, Array4};

use super::idx::{read_idx, read_idx_file, write_idx};
use super::*;
use crate::TrainError;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hasten-train-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn is_format(r: Result<idx::IdxArray>) -> bool {
    matches!(r, Err(TrainError::Format { .. }))
}

#[test]
fn idx_round_trip_raw_and_gzip() {
    let data: Vec<u8> = (0..24).collect();
    let bytes = write_idx(&[2, 3, 4], &data).unwrap();
    assert_eq!(&bytes[..8], &[0, 0, 8, 3, 0, 0, 0, 2]);
    let a = read_idx(&bytes[..], "mem", Some(bytes.len() as u64)).unwrap();
    assert_eq!(
        (a.dims.clone(), a.data.clone()),
        (vec![2, 3, 4], data.clone())
    );
    let dir = temp_dir("idx");
    std::fs::write(dir.join("raw"), &bytes).unwrap();
    std::fs::write(dir.join("packed.gz"), gzip(&bytes)).unwrap();
    assert_eq!(read_idx_file(&dir.join("raw")).unwrap(), a);
    assert_eq!(read_idx_file(&dir.join("packed.gz")).unwrap(), a);
    assert!(matches!(
        read_idx_file(&dir.join("absent")),
        Err(TrainError::Io { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn idx_headers_are_validated_before_allocating() {
    let good = write_idx(&[2, 2], &[1, 2, 3, 4]).unwrap();
    let len = |b: &[u8]| Some(b.len() as u64);
    // Truncated data, trailing data, bad magic, other element types, zero rank and dims.
    let short = &good[..good.len() - 1];
    assert!(is_format(read_idx(short, "t", len(short))));
    assert!(is_format(read_idx(short, "t", None)));
    let mut long = good.clone();
    long.push(9);
    assert!(is_format(read_idx(&long[..], "t", len(&long))));
    assert!(is_format(read_idx(&long[..], "t", None)));
    for (at, v) in [(0, 1u8), (1, 1), (2, 0x0d), (3, 0)] {
        let mut b = good.clone();
        b[at] = v;
        assert!(is_format(read_idx(&b[..], "t", len(&b))), "byte {at} = {v}");
    }
    let zero_dim = write_idx(&[2, 2], &[1, 2, 3, 4]).map(|mut b| {
        b[7] = 0;
        b
    });
    assert!(is_format(read_idx(&zero_dim.unwrap()[..], "t", None)));
    assert!(is_format(read_idx(&[0u8, 0][..], "t", None)));
    assert!(is_format(read_idx(&[0u8, 0, 8, 2, 0, 0][..], "t", None)));
    // A header claiming 2³² × 2³² × 2³² bytes: an overflow or a length
    // mismatch, reported without reading (or allocating) the claimed size.
    let huge = [
        0u8, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    ];
    assert!(is_format(read_idx(&huge[..], "t", len(&huge))));
    let big = [0u8, 0, 8, 1, 255, 255, 255, 255, 1, 2];
    assert!(is_format(read_idx(&big[..], "t", len(&big))));
    assert!(is_format(read_idx(&big[..], "t", None)));
}

#[test]
fn mnist_layout_loads_from_raw_and_gzipped_files() {
    let dir = temp_dir("mnist");
    let pixels: Vec<u8> = (0..3 * 2 * 2).map(|v| (v * 20) as u8).collect();
    let files = [
        (
            "train-images-idx3-ubyte",
            write_idx(&[3, 2, 2], &pixels).unwrap(),
        ),
        (
            "train-labels-idx1-ubyte",
            write_idx(&[3], &[7, 0, 9]).unwrap(),
        ),
        (
            "t10k-images-idx3-ubyte",
            write_idx(&[1, 2, 2], &[0, 255, 51, 102]).unwrap(),
        ),
        ("t10k-labels-idx1-ubyte", write_idx(&[1], &[3]).unwrap()),
    ];
    assert!(!mnist_present(&dir));
    for (i, (name, bytes)) in files.iter().enumerate() {
        if i % 2 == 0 {
            std::fs::write(dir.join(name), bytes).unwrap();
        } else {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).unwrap();
        }
    }
    assert!(mnist_present(&dir));
    let s = load_mnist(&dir).unwrap();
    assert_eq!(s.train.len(), 3);
    assert_eq!(s.train.labels(), &[7, 0, 9]);
    assert_eq!(s.train.sample_shape(), ActShape::new(1, 2, 2));
    assert_eq!(
        s.test.sample(0).iter().copied().collect::<Vec<_>>(),
        vec![0.0, 1.0, 0.2, 0.4]
    );
    // A label out of range, or counts that disagree, are errors.
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&write_idx(&[1], &[10]).unwrap()),
    )
    .unwrap();
    assert!(load_mnist(&dir).is_err());
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&write_idx(&[2], &[1, 2]).unwrap()),
    )
    .unwrap();
    assert!(matches!(load_mnist(&dir), Err(TrainError::Format { .. })));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn npy_reads_arrays_and_rejects_other_files() {
    use ndarray_npy::WriteNpyExt;
    let dir = temp_dir("npy");
    let a = Array4::from_shape_fn((2, 1, 2, 3), |(n, _, h, w)| {
        (n * 6 + h * 3 + w) as f32 * 0.5
    });
    let mut buf = Vec::new();
    a.write_npy(&mut buf).unwrap();
    std::fs::write(dir.join("a.npy"), &buf).unwrap();
    assert_eq!(npy::read_npy_f32(&dir.join("a.npy")).unwrap(), a.into_dyn());
    assert!(matches!(
        npy::read_npy_u8(&dir.join("a.npy")),
        Err(TrainError::Format { .. })
    ));
    std::fs::write(dir.join("b.npy"), b"not an npy file").unwrap();
    assert!(matches!(
        npy::read_npy_f32(&dir.join("b.npy")),
        Err(TrainError::Format { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

fn tiny_set(n: usize) -> ImageSet {
    let images = Array4::from_shape_fn((n, 1, 3, 3), |(i, _, h, w)| (i * 100 + h * 3 + w) as f32);
    ImageSet::new(images, (0..n).map(|i| i % 4).collect(), 4).unwrap()
}

#[test]
fn loader_partitions_each_epoch_and_is_reproducible() {
    let l = Loader::new(10, 4).unwrap().shuffled(7);
    let e0 = l.batches(0);
    assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    let mut all: Vec<usize> = e0.concat();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    assert_eq!(l.batches(0), e0, "same seed and epoch, same order");
    assert_ne!(l.batches(1), e0, "another epoch, another order");
    assert_ne!(Loader::new(10, 4).unwrap().shuffled(8).batches(0), e0);
    let plain = Loader::new(10, 4).unwrap().drop_last(true);
    assert_eq!(plain.batches(3), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    let set = tiny_set(10);
    let (x, y) = plain.collate(&set, &[2, 5], &Augment::new(), 0).unwrap();
    assert_eq!(x.shape(), &[2, 1, 3, 3]);
    assert_eq!(x[[1, 0, 2, 1]], 507.0);
    assert_eq!(y, vec![2, 1]);
    assert!(plain.collate(&set, &[10], &Augment::new(), 0).is_err());
    assert!(plain.collate(&set, &[], &Augment::new(), 0).is_err());
    assert!(Loader::new(0, 1).is_err() && Loader::new(1, 0).is_err());
}

#[test]
fn prefetched_batches_are_the_collated_batches_in_order() {
    let set = tiny_set(11);
    let loader = Loader::new(11, 3).unwrap().shuffled(5);
    let augment = Augment::new().random_crop(1).horizontal_flip(true);
    for epoch in 0..2 {
        let expected: Vec<_> = loader
            .batches(epoch)
            .iter()
            .map(|b| loader.collate(&set, b, &augment, epoch).unwrap())
            .collect();
        for ahead in [1, 2, 5] {
            let mut got = Vec::new();
            loader
                .for_each_prefetched(&set, &augment, epoch, ahead, |x, y| {
                    got.push((x, y));
                    Ok(())
                })
                .unwrap();
            assert_eq!(got, expected, "epoch {epoch}, {ahead} ahead");
        }
    }
}

#[test]
fn prefetching_stops_at_the_first_error() {
    let set = tiny_set(10);
    let loader = Loader::new(10, 2).unwrap();
    let mut calls = 0;
    let r = loader.for_each_prefetched(&set, &Augment::new(), 0, 2, |_, _| {
        calls += 1;
        if calls == 2 {
            Err(TrainError::invalid("step", 2, "planted failure"))
        } else {
            Ok(())
        }
    });
    assert!(matches!(r, Err(TrainError::Invalid { name: "step", .. })));
    assert_eq!(calls, 2, "no batch after the failing one");
    // A loader larger than the data set fails in `collate`, and that error
    // comes back.
    let too_long = Loader::new(12, 4).unwrap();
    let mut seen = 0;
    let r = too_long.for_each_prefetched(&set, &Augment::new(), 0, 1, |_, _| {
        seen += 1;
        Ok(())
    });
    assert!(matches!(
        r,
        Err(TrainError::Invalid {
            name: "sample index",
            ..
        })
    ));
    assert_eq!(seen, 2);
    assert!(loader
        .for_each_prefetched(&set, &Augment::new(), 0, 0, |_, _| Ok(()))
        .is_err());
}

#[test]
fn augmentations_by_hand_and_reproducible() {
    let sample = Array3::from_shape_fn((1, 3, 3), |(_, h, w)| (h * 3 + w + 1) as f32);
    let mut rng = SeededRng::new(0);
    // Flip only: every draw either mirrors the rows or keeps them.
    let flip = Augment::new().horizontal_flip(true);
    let mut seen = [false, false];
    for _ in 0..20 {
        let y = flip.apply(sample.view(), &mut rng).unwrap();
        let row: Vec<f32> = y.slice(ndarray::s![0, 0, ..]).to_vec();
        if row == vec![1.0, 2.0, 3.0] {
            seen[0] = true;
        } else {
            assert_eq!(row, vec![3.0, 2.0, 1.0]);
            seen[1] = true;
        }
    }
    assert_eq!(seen, [true, true]);
    // Crop with padding 1: every output is the sample shifted by (dy, dx) ∈ {−1, 0, 1}²
    // with zeros shifted in, and the value sum tells the shift apart.
    let crop = Augment::new().random_crop(1);
    let mut shifts = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let y = crop.apply(sample.view(), &mut rng).unwrap();
        let found = (-1i32..=1)
            .flat_map(|dy| (-1i32..=1).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| {
                (0..3).all(|h| {
                    (0..3).all(|w| {
                        let (sh, sw) = (h as i32 + dy, w as i32 + dx);
                        let want = if (0..3).contains(&sh) && (0..3).contains(&sw) {
                            sample[[0, sh as usize, sw as usize]]
                        } else {
                            0.0
                        };
                        y[[0, h, w]] == want
                    })
                })
            });
        shifts.insert(found.expect("a shifted copy"));
    }
    assert_eq!(shifts.len(), 9, "every offset occurs");
    // Normalisation: (x − 1)/2.
    let norm = Augment::new().normalize(&[1.0], &[2.0]).unwrap();
    let y = norm.apply(sample.view(), &mut rng).unwrap();
    assert_eq!(y[[0, 2, 2]], 4.0);
    assert!(Augment::new()
        .normalize(&[0.0, 0.0], &[1.0, 1.0])
        .unwrap()
        .apply(sample.view(), &mut rng)
        .is_err());
    assert!(Augment::new().normalize(&[0.0], &[0.0]).is_err());
    // Through the loader: the same seed, epoch and index give the same batch.
    let set = tiny_set(6);
    let l = Loader::new(6, 3).unwrap().shuffled(3);
    let aug = Augment::new().random_crop(1).horizontal_flip(true);
    let a = l.collate(&set, &[0, 4, 5], &aug, 2).unwrap();
    assert_eq!(a, l.collate(&set, &[0, 4, 5], &aug, 2).unwrap());
    let b = l.collate(&set, &[4], &aug, 2).unwrap();
    assert_eq!(
        a.0.slice(ndarray::s![1..2, .., .., ..]),
        b.0,
        "a sample's augmentation does not depend on its batch"
    );
}

#[test]
fn full_data_sets_load_when_fetched() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    for (name, first_train_label) in [("mnist", 5), ("fashion-mnist", 9)] {
        let dir = root.join(name);
        if !mnist_present(&dir) {
            println!(
                "skipped: {name} not found in {} (run scripts/fetch-datasets.sh)",
                dir.display()
            );
            continue;
        }
        let s = load_mnist(&dir).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000), "{name}");
        assert_eq!(s.train.sample_shape(), ActShape::new(1, 28, 28));
        assert_eq!(s.train.label(0), first_train_label, "{name}");
        let mut counts = [0usize; 10];
        s.test.labels().iter().for_each(|&l| counts[l] += 1);
        assert!(counts.iter().all(|&c| c > 800), "{name}: {counts:?}");
    }
}

#[test]
fn normalized_maps_each_channel_and_rejects_bad_statistics() {
    let images = Array4::from_shape_fn((3, 2, 2, 2), |(n, c, y, x)| {
        (n * 8 + c * 4 + y * 2 + x) as f32 / 24.0
    });
    let set = ImageSet::new(images.clone(), vec![0, 1, 2], 3).unwrap();
    let norm = set.normalized(&[0.5, -1.0], &[2.0, 0.25]).unwrap();
    for ((n, c, y, x), &v) in norm.images().indexed_iter() {
        let (mean, std) = if c == 0 { (0.5, 2.0) } else { (-1.0, 0.25) };
        assert_eq!(v, (images[[n, c, y, x]] - mean) / std);
    }
    assert_eq!(norm.labels(), set.labels());
    assert!(set.normalized(&[0.5], &[1.0]).is_err());
    assert!(set.normalized(&[0.5, 0.5], &[1.0, 0.0]).is_err());
}
