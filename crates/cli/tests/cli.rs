//! End-to-end tests of the `hasten` binary.

use std::path::Path;
use std::process::{Command, Output};

use hasten_core::ndarray::{Array4, Ix4};
use hasten_core::{relative_error, Graph, SeededRng};
use hasten_models::{by_name, ModelConfig};
use hasten_onnx::weights::{read_npy, write_npy};
use hasten_train::data::idx::write_idx;

fn hasten(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hasten"))
        .args(args)
        .env("HASTEN_PYTHON", "/nonexistent/python")
        .output()
        .expect("the binary starts")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = hasten(args);
    assert!(
        out.status.success(),
        "hasten {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a command that must fail with status 1 and a one-line message.
fn fails(args: &[&str]) -> String {
    let out = hasten(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "hasten {args:?}: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.starts_with("hasten: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn lenet() -> Graph {
    by_name("lenet5", &ModelConfig::mnist()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_lists_summary(text: &str, graph: &Graph) {
    for node in graph.nodes() {
        assert!(
            text.contains(node.name()),
            "{} missing:\n{text}",
            node.name()
        );
    }
    let total = graph.summary().unwrap().total;
    let line = text
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no totals:\n{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], total.macs.to_string(), "{line}");
    assert_eq!(fields[2], total.params.to_string(), "{line}");
}

#[test]
fn inspect_builtin_architecture() {
    let text = ok(&["inspect", "lenet5"]);
    assert_lists_summary(&text, &lenet());
    assert!(text.contains("61706"), "{text}");
    assert!(!text.contains("plan:"));
    let with_plan = ok(&["inspect", "lenet5", "--plan", "--batch", "2"]);
    assert!(with_plan.contains("plan: batch 2"), "{with_plan}");
    assert!(with_plan.contains("[fc3]"), "{with_plan}");
}

#[test]
fn inspect_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet8.onnx");
    let graph = by_name("resnet8", &ModelConfig::mnist()).unwrap();
    hasten_onnx::export_file(&graph, &file).unwrap();
    let imported = hasten_onnx::import_file(&file, &hasten_onnx::ImportOptions::default()).unwrap();
    let text = ok(&["inspect", path(&file), "--plan"]);
    assert_lists_summary(&text, &imported);
    assert_eq!(
        imported.summary().unwrap().total.params,
        graph.summary().unwrap().total.params
    );
    assert!(text.contains("plan: batch 1"), "{text}");
}

/// A Tucker-2 + int8 export (int8 layers inside decomposed blocks, written
/// as QDQ) imports and inspects: every int8 layer comes back as one, and the
/// totals are the compressed graph's.
#[test]
fn inspect_a_tucker2_int8_export() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.onnx");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes/tucker2-int8.toml");
    ok(&[
        "compress",
        "resnet8",
        "--recipe",
        path(&recipe),
        "-o",
        path(&out),
    ]);
    let base = by_name("resnet8", &ModelConfig::mnist()).unwrap();
    let recipe = hasten::pipeline::Recipe::from_path(&recipe).unwrap();
    let (compressed, _) = hasten::pipeline::compress(&base, &recipe, None).unwrap();
    let int8_ops = |g: &Graph| -> usize {
        g.nodes()
            .iter()
            .map(|n| match n.op() {
                hasten_core::NodeOp::Op(op) => usize::from(op.kind() == "int8_conv"),
                hasten_core::NodeOp::Block(b) => {
                    b.ops().iter().filter(|op| op.kind() == "int8_conv").count()
                }
                _ => 0,
            })
            .sum()
    };
    let imported = hasten_onnx::import_file(&out, &hasten_onnx::ImportOptions::default()).unwrap();
    assert!(int8_ops(&compressed) > 0);
    assert_eq!(int8_ops(&imported), int8_ops(&compressed));
    let text = ok(&["inspect", path(&out)]);
    assert_lists_summary(&text, &imported);
    assert!(text.contains("int8_conv"), "{text}");
    assert_eq!(
        imported.summary().unwrap().total.macs,
        compressed.summary().unwrap().total.macs
    );
}

#[test]
fn run_matches_reference_forward() {
    let dir = tempfile::tempdir().unwrap();
    let graph = lenet();
    let x: Array4<f32> = SeededRng::new(3).normal_array((3, 1, 28, 28), 1.0);
    let input = dir.path().join("x.npy");
    let output = dir.path().join("y.npy");
    std::fs::write(&input, write_npy(&x.clone().into_dyn()).unwrap()).unwrap();
    ok(&[
        "run",
        "lenet5",
        "--input",
        path(&input),
        "--output",
        path(&output),
    ]);
    let y = read_npy(&std::fs::read(&output).unwrap())
        .unwrap()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let reference = graph.reference_forward(&[&x]).unwrap().remove(0);
    assert_eq!(y.shape(), reference.shape());
    let err = relative_error(&reference, &y);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.npy");
    let missing = dir.path().join("missing.npy");
    let err = fails(&[
        "run",
        "lenet5",
        "--input",
        path(&missing),
        "--output",
        path(&out),
    ]);
    assert!(err.contains("cannot read"), "{err}");

    let wrong = dir.path().join("wrong.npy");
    let x: Array4<f32> = SeededRng::new(0).normal_array((2, 3, 28, 28), 1.0);
    std::fs::write(&wrong, write_npy(&x.into_dyn()).unwrap()).unwrap();
    let err = fails(&[
        "run",
        "lenet5",
        "--input",
        path(&wrong),
        "--output",
        path(&out),
    ]);
    assert!(err.contains("the model takes 1×28×28"), "{err}");

    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"not an array").unwrap();
    fails(&[
        "run",
        "lenet5",
        "--input",
        path(&garbage),
        "--output",
        path(&out),
    ]);

    let bad_onnx = dir.path().join("bad.onnx");
    std::fs::write(&bad_onnx, b"\x08\x07garbage").unwrap();
    let err = fails(&["inspect", path(&bad_onnx)]);
    assert!(err.contains("cannot import"), "{err}");

    let err = fails(&["inspect", "no_such_model.onnx"]);
    assert!(err.contains("no such file"), "{err}");
    let err = fails(&["inspect", "alexnet"]);
    assert!(err.contains("lenet5"), "{err}");
    fails(&["eval", "lenet5", "--data", path(&dir.path().join("none"))]);
    fails(&["eval", "lenet5", "--data", path(dir.path())]);
    fails(&["bench", "lenet5", "--batch", "0"]);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(hasten(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(hasten(&["run", "lenet5"]).status.code(), Some(2));
    assert_eq!(hasten(&[]).status.code(), Some(2));
    assert_eq!(
        hasten(&["bench", "lenet5", "--runs", "x"]).status.code(),
        Some(2)
    );
}

#[test]
fn bench_prints_a_median() {
    let text = ok(&[
        "bench",
        "lenet5",
        "--runs",
        "3",
        "--threads",
        "1",
        "--batch",
        "2",
    ]);
    assert!(text.contains("hasten: median "), "{text}");
    assert!(text.contains(" ms"), "{text}");
    assert!(text.contains("isa: "), "{text}");
    let text = ok(&[
        "bench",
        "lenet5",
        "--runs",
        "2",
        "--threads",
        "1",
        "--compare-ort",
    ]);
    assert!(text.contains("hasten: median "), "{text}");
    assert!(text.contains("onnxruntime: unavailable"), "{text}");
}

/// Writes an IDX test set of `labels.len()` images.
fn write_set(dir: &Path, pixels: &[u8], labels: &[u8]) {
    let n = labels.len() as u32;
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        write_idx(&[n, 28, 28], pixels).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        write_idx(&[n], labels).unwrap(),
    )
    .unwrap();
}

/// `n` 28×28 noise images as 8-bit pixels, and the same images as the
/// network sees them after `(x / 255 − mean) / std`.
fn noise_images(n: usize, seed: u64, mean: f32, std: f32) -> (Vec<u8>, Array4<f32>) {
    let noise: Array4<f32> = SeededRng::new(seed).normal_array((n, 1, 28, 28), 1.0);
    let pixels: Vec<u8> = noise
        .iter()
        .map(|v| ((v * 64.0 + 128.0).clamp(0.0, 255.0)) as u8)
        .collect();
    let x = Array4::from_shape_vec(
        (n, 1, 28, 28),
        pixels
            .iter()
            .map(|&b| (f32::from(b) / 255.0 - mean) / std)
            .collect(),
    )
    .unwrap();
    (pixels, x)
}

/// The class the test network predicts for each image of `x`.
fn lenet_predictions(x: &Array4<f32>) -> Vec<u8> {
    let logits = lenet().reference_forward(&[x]).unwrap().remove(0);
    logits
        .outer_iter()
        .map(|row| {
            let v: Vec<f32> = row.iter().copied().collect();
            (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u8
        })
        .collect()
}

#[test]
fn eval_counts_correct_predictions() {
    const N: usize = 20;
    let (mean, std) = (0.25f32, 0.5f32);
    let (pixels, x) = noise_images(N, 11, mean, std);
    let predictions = lenet_predictions(&x);

    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let (m, s) = (mean.to_string(), std.to_string());
    let args = [
        "eval", "lenet5", "--data", d, "--mean", &m, "--std", &s, "--batch", "8",
    ];
    write_set(dir.path(), &pixels, &predictions);
    let text = ok(&args);
    assert!(text.contains("accuracy: 100.00 % (20/20)"), "{text}");

    // Seven wrong labels: 13 of 20 right.
    let shuffled: Vec<u8> = predictions
        .iter()
        .enumerate()
        .map(|(i, &p)| if i % 3 == 0 { (p + 1) % 10 } else { p })
        .collect();
    write_set(dir.path(), &pixels, &shuffled);
    let text = ok(&args);
    assert!(text.contains("accuracy: 65.00 % (13/20)"), "{text}");

    let mut limited = args.to_vec();
    limited.extend(["--limit", "10"]);
    let text = ok(&limited);
    // Indices 0, 3, 6, 9 of the first ten are wrong.
    assert!(text.contains("accuracy: 60.00 % (6/10)"), "{text}");
}

/// Writes the executable script `name` with `text` into `dir`.
///
/// The executable is written by `install`, not by this process: a file this
/// process holds open for writing is inherited by any child that another
/// test thread forks meanwhile, and executing it while such a child has not
/// yet called `exec` fails with "Text file busy" (a flake under load).
#[cfg(unix)]
fn install_script(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let source = dir.join(format!("{name}.txt"));
    std::fs::write(&source, text).unwrap();
    let script = dir.join(name);
    let status = Command::new("install")
        .args(["-m", "755"])
        .arg(&source)
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "install: {status}");
    script
}

/// A stand-in interpreter in `dir` that answers like `scripts/ort_bench.py`
/// when it is handed that script with `-c` and an exported model.
#[cfg(unix)]
fn fake_python(dir: &Path) -> std::path::PathBuf {
    install_script(
        dir,
        "python",
        "#!/bin/sh\ntest \"$1\" = -c || exit 7\n\
         case \"$2\" in *ort.InferenceSession*) ;; *) exit 8 ;; esac\n\
         test -s \"$3\" || exit 9\necho median_ms=2.5 min_ms=2.0 runs=$9\n",
    )
}

fn bench_compare(python: Option<&Path>, cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hasten"));
    cmd.args([
        "bench",
        "lenet5",
        "--runs",
        "2",
        "--threads",
        "1",
        "--compare-ort",
    ])
    .current_dir(cwd)
    .env_remove("HASTEN_PYTHON");
    if let Some(p) = python {
        cmd.env("HASTEN_PYTHON", p);
    }
    cmd.output().unwrap()
}

#[cfg(unix)]
#[test]
fn compare_ort_reports_both_medians() {
    // The script is embedded: the binary runs from a directory without
    // `scripts/`, with the interpreter named by HASTEN_PYTHON.
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_python(dir.path());
    let out = bench_compare(Some(&fake), dir.path());
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("onnxruntime: median 2.500 ms"), "{text}");
    assert!(text.contains("ratio (onnxruntime / hasten): "), "{text}");
}

#[cfg(unix)]
#[test]
fn compare_ort_finds_the_venv_of_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join(".venv/bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_python(&bin);
    let text = stdout(&bench_compare(None, dir.path()));
    assert!(text.contains("onnxruntime: median 2.500 ms"), "{text}");
}

#[cfg(unix)]
#[test]
fn compare_ort_without_onnxruntime_says_so() {
    // An interpreter without onnxruntime: the script's own import check.
    let dir = tempfile::tempdir().unwrap();
    let Some(python) = ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import sys"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!("SKIPPED: no python3 on the PATH");
        return;
    };
    // `-S -s` and an empty PYTHONPATH hide site-packages, so onnxruntime
    // cannot be imported.
    let wrapper = install_script(
        dir.path(),
        "python",
        &format!("#!/bin/sh\nPYTHONPATH= exec {python} -S -s -I \"$@\"\n"),
    );
    let out = bench_compare(Some(&wrapper), dir.path());
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("onnxruntime: unavailable (ort_bench.py exited with exit status: 3: onnxruntime unavailable"),
        "{text}"
    );
}

/// With a Python that has onnxruntime (HASTEN_PYTHON or the workspace's
/// `.venv`), the embedded script really times the model.
#[test]
fn compare_ort_runs_the_embedded_script() {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let python = std::env::var_os("HASTEN_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or(venv);
    let has_ort = Command::new(&python)
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_ort {
        eprintln!("SKIPPED: {} cannot import onnxruntime", python.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = bench_compare(Some(&python), dir.path());
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("onnxruntime: median "), "{text}");
    assert!(!text.contains("unavailable"), "{text}");
}

const RECIPE: &str = r#"
latency = { batches = [1], runs = 2 }

[[steps]]
select = { names = ["conv2"] }
method = { name = "tucker2", ranks = [4, 3] }

[[steps]]
select = { names = ["fc1"] }
method = { name = "svd", rank = 12 }

[[steps]]
select = { kinds = ["linear"] }
method = { name = "kmeans", k = 16 }
"#;

#[test]
fn compress_exports_the_compressed_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, json) = (dir.path().join("r.toml"), dir.path().join("r.json"));
    let recipe = hasten::pipeline::Recipe::from_toml(RECIPE).unwrap();
    std::fs::write(&toml, RECIPE).unwrap();
    std::fs::write(&json, recipe.to_json().unwrap()).unwrap();
    let (out, report) = (dir.path().join("c.onnx"), dir.path().join("c.json"));
    let weights = dir.path().join("c.safetensors");
    let text = ok(&[
        "compress",
        "lenet5",
        "--recipe",
        path(&toml),
        "-o",
        path(&out),
        "--report",
        path(&report),
        "--weights-out",
        path(&weights),
    ]);
    assert!(text.contains("total (one-shot mode)"), "{text}");
    assert!(text.contains("fc1.1"), "{text}");
    let (expected, _) = hasten::pipeline::compress(&lenet(), &recipe, None).unwrap();
    let imported = hasten_onnx::import_file(&out, &hasten_onnx::ImportOptions::default()).unwrap();
    let x: Array4<f32> = SeededRng::new(5).normal_array((2, 1, 28, 28), 1.0);
    let want = expected.reference_forward(&[&x]).unwrap().remove(0);
    let got = imported.reference_forward(&[&x]).unwrap().remove(0);
    let err = relative_error(&want, &got);
    assert!(err < 1e-5, "re-imported vs compressed {err:e}");
    let json_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json_report["after"]["macs"], expected.cost().unwrap().macs);
    // The weight file holds the dense parameters, the Tucker-2 block's three
    // convolutions included, equal to those the ONNX file carries.
    let saved = hasten_onnx::weights::read_safetensors(&std::fs::read(&weights).unwrap()).unwrap();
    let mut want_params = expected.parameters();
    want_params.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(saved, want_params);
    let onnx_params = imported.parameters();
    for i in 0..3 {
        let name = format!("conv2.{i}.weight");
        let (_, v) = saved
            .iter()
            .find(|(n, _)| *n == name)
            .expect("block weight saved");
        let (_, o) = onnx_params
            .iter()
            .find(|(n, _)| *n == name)
            .expect("in ONNX");
        assert_eq!(v, o, "{name}");
    }
    assert!(
        text.contains(&format!("wrote {}", weights.display())),
        "{text}"
    );
    // The JSON form of the recipe gives the same network.
    let out2 = dir.path().join("c2.onnx");
    ok(&[
        "compress",
        "lenet5",
        "--recipe",
        path(&json),
        "-o",
        path(&out2),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

/// The error of `hasten compress lenet5 --recipe RECIPE -o OUT`, which must fail.
fn compress_fails(recipe: &Path, out: &Path) -> String {
    fails(&[
        "compress",
        "lenet5",
        "--recipe",
        path(recipe),
        "-o",
        path(out),
    ])
}

#[test]
fn compress_rejects_bad_recipes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.onnx");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[steps]]\nmethod = { name = \"tuker2\", rank = 4 }\n",
    )
    .unwrap();
    let err = compress_fails(&bad, &out);
    assert!(err.contains("step 1 (tuker2)"), "{err}");
    assert!(err.contains("unknown variant"), "{err}");
    std::fs::write(
        &bad,
        "[[steps]]\nselect = { names = [\"conv9\"] }\nmethod = { name = \"svd\", rank = 4 }\n",
    )
    .unwrap();
    let err = compress_fails(&bad, &out);
    assert!(err.contains("matches no node"), "{err}");
    let err = compress_fails(&dir.path().join("missing.toml"), &out);
    assert!(err.contains("missing.toml"), "{err}");
    assert!(!out.exists(), "nothing written on failure");
}

#[test]
fn compress_with_data_reports_accuracy_on_normalised_images() {
    const N: usize = 16;
    let (mean, std) = (0.25f32, 0.5f32);
    let (pixels, x) = noise_images(N, 12, mean, std);
    // Labels: the original network's own predictions, so its accuracy is
    // 100 % exactly when the command normalises as the network expects.
    let labels = lenet_predictions(&x);
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), &pixels, &labels);
    for (name, dims, bytes) in [
        ("train-images-idx3-ubyte", vec![N as u32, 28, 28], &pixels),
        ("train-labels-idx1-ubyte", vec![N as u32], &labels),
    ] {
        std::fs::write(dir.path().join(name), write_idx(&dims, bytes).unwrap()).unwrap();
    }
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        "mode = \"gradual\"\nfine_tune = { epochs = 1, lr = 0.001, batch = 8 }\nlatency = { batches = [] }\n[[steps]]\nselect = { names = [\"fc1\"] }\nmethod = { name = \"svd\", rank = 16 }\n",
    )
    .unwrap();
    let (out, report) = (dir.path().join("c.onnx"), dir.path().join("c.json"));
    let (m, s) = (mean.to_string(), std.to_string());
    let text = ok(&[
        "compress",
        "lenet5",
        "--recipe",
        path(&recipe),
        "--data",
        path(dir.path()),
        "--mean",
        &m,
        "--std",
        &s,
        "--train-limit",
        "8",
        "-o",
        path(&out),
        "--report",
        path(&report),
    ]);
    assert!(text.contains("accuracy: 100.00 % →"), "{text}");
    assert!(text.contains("after fine-tuning"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["accuracy_before"], 1.0);
    assert_eq!(
        json["events"],
        serde_json::json!([
            { "event": "transform", "step": 1 },
            { "event": "fine-tune", "step": 1 }
        ])
    );
    let err = fails(&[
        "compress",
        "lenet5",
        "--recipe",
        path(&recipe),
        "--data",
        path(dir.path()),
        "--std",
        "0",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("--std 0"), "{err}");
}

/// A learnable two-class set: the upper or lower half of the image is
/// brighter, under noise. Writes `train-*` (n_train) and `t10k-*` (n_test).
fn write_halves(dir: &Path, n_train: usize, n_test: usize) {
    let mut rng = SeededRng::new(21);
    let mut make = |n: usize| {
        let mut pixels = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % 2) as u8;
            for r in 0..28 {
                let bright = (r < 14) == (label == 0);
                for _ in 0..28 {
                    let v = if bright { 150.0 } else { 60.0 } + 40.0 * rng.normal() as f32;
                    pixels.push(v.clamp(0.0, 255.0) as u8);
                }
            }
            labels.push(label);
        }
        (pixels, labels)
    };
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let (pixels, labels) = make(n);
        let images = write_idx(&[n as u32, 28, 28], &pixels).unwrap();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let labels = write_idx(&[n as u32], &labels).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// The (loss, test accuracy in %) of each `epoch` line.
fn epochs(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| l.starts_with("epoch"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |key: &str| w[w.iter().position(|&x| x == key).unwrap() + 1];
            (at("loss").parse().unwrap(), at("test").parse().unwrap())
        })
        .collect()
}

#[test]
fn train_and_finetune_learn_and_export_a_reimportable_model() {
    let dir = tempfile::tempdir().unwrap();
    write_halves(dir.path(), 64, 40);
    let d = path(dir.path());
    let (out, tuned, ckpt) = (
        dir.path().join("t.onnx"),
        dir.path().join("f.onnx"),
        dir.path().join("t.safetensors"),
    );
    let text = ok(&[
        "train",
        "lenet5",
        "--data",
        d,
        "--epochs",
        "4",
        "--lr",
        "0.003",
        "--batch",
        "16",
        "--mean",
        "0.4",
        "--std",
        "0.3",
        "--checkpoint",
        path(&ckpt),
        "-o",
        path(&out),
    ]);
    let history = epochs(&text);
    assert_eq!(history.len(), 4, "{text}");
    let (first, last) = (history[0], history[3]);
    assert!(last.0 < first.0, "loss did not fall: {text}");
    assert!(last.1 >= 95.0, "test accuracy {}: {text}", last.1);
    assert!(ckpt.exists() && out.exists());
    // The exported model re-imports and scores what training reported.
    let eval = ok(&[
        "eval",
        path(&out),
        "--data",
        d,
        "--mean",
        "0.4",
        "--std",
        "0.3",
    ]);
    assert!(
        eval.contains(&format!("accuracy: {:.2} %", last.1)),
        "{eval}\n{text}"
    );
    // Fine-tuning starts from those weights: already accurate after one epoch.
    // LeNet-5 has no batch norm: recalibration leaves its accuracy as is.
    let text = ok(&[
        "finetune",
        path(&out),
        "--data",
        d,
        "--epochs",
        "1",
        "--lr",
        "0.0005",
        "--mean",
        "0.4",
        "--std",
        "0.3",
        "--recalibrate-bn",
        "2",
        "-o",
        path(&tuned),
    ]);
    assert!(epochs(&text)[0].1 >= 95.0, "{text}");
    assert!(
        text.contains(&format!(
            "batch norms recalibrated on 2 batches of 64: test {:.2} %",
            last.1
        )),
        "{text}"
    );
    ok(&["inspect", path(&tuned)]);
    // From scratch, one epoch at a tiny rate is near chance: `train` did
    // re-draw the weights rather than keep them.
    let text = ok(&[
        "train",
        path(&out),
        "--data",
        d,
        "--epochs",
        "1",
        "--lr",
        "0.00001",
        "--mean",
        "0.4",
        "--std",
        "0.3",
        "-o",
        path(&tuned),
    ]);
    assert!(epochs(&text)[0].1 < 95.0, "{text}");
}

#[test]
fn train_rejects_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    write_halves(dir.path(), 8, 4);
    let d = path(dir.path());
    let out = dir.path().join("o.onnx");
    let err = fails(&[
        "train",
        "lenet5",
        "--data",
        d,
        "--epochs",
        "0",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("--epochs"), "{err}");
    let err = fails(&[
        "train",
        "lenet5",
        "--data",
        d,
        "--lr",
        "0",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("--lr"), "{err}");
    let err = fails(&[
        "finetune",
        "lenet5",
        "--data",
        d,
        "--batch",
        "0",
        "-o",
        path(&out),
    ]);
    assert!(err.contains("--batch"), "{err}");
    let missing = dir.path().join("missing");
    let err = fails(&[
        "finetune",
        "lenet5",
        "--data",
        path(&missing),
        "-o",
        path(&out),
    ]);
    assert!(err.contains("no such directory"), "{err}");
    assert!(!out.exists(), "nothing written on failure");
}
