//! The recipes of the small VGG and the small MobileNet rows of the
//! Fashion-MNIST section, each meaningful for its architecture: the VGG's
//! dense 3×3 convolutions and large fully connected layer take the
//! low-rank methods (survey section 2), the MobileNet, whose depthwise
//! separable blocks are already factorised (section 3), takes channel
//! pruning through its depthwise convolutions (section 6) and quantization
//! of its pointwise convolutions (section 5).

use crate::Method;

/// One-shot fine-tuning: one epoch on the slice.
pub const FINE_TUNE: Option<&str> = Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64 }");

/// No fine-tuning (post-training methods).
const POST_TRAINING: Option<&str> = Some("");

/// Quantization-aware fine-tuning of the preceding quantizer (survey eq. (5)).
const QAT: Option<&str> = Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64, qat = true }");

/// The stronger low-rank rows' fine-tuning: distilled from the original
/// (survey section 7, eq. (19)–(20)); CP's factors at a tenth of the rate
/// (Lebedev et al., section 2).
pub const STRONG_CP: &str = "fine_tune = { epochs = 1, lr = 0.001, batch = 64, factor_lr_scale = 0.1, distill = { temperature = 4.0, weight = 0.5 } }";

/// As [`STRONG_CP`], every weight at the network's rate (Tucker-2).
pub const STRONG_TUCKER: &str =
    "fine_tune = { epochs = 1, lr = 0.001, batch = 64, distill = { temperature = 4.0, weight = 0.5 } }";

/// int8 post-training: per-channel weights, calibrated activation ranges.
const INT8: Method = Method {
    family: "quantization",
    label: "int8 post-training (calibrated)",
    steps: r#"method = { name = "int8", granularity = "per-channel" }"#,
    header: POST_TRAINING,
};

/// k-means weight sharing with 16 centroids per output channel.
const KMEANS: Method = Method {
    family: "quantization",
    label: "k-means 4-bit (k = 16), centroids fine-tuned",
    steps: r#"method = { name = "kmeans", k = 16, granularity = "per-channel" }"#,
    header: FINE_TUNE,
};

/// Filter pruning by the L1 norm (eq. (14)) to half the MACs.
const FILTER_PRUNING: Method = Method {
    family: "pruning",
    label: "filter pruning (L1), half the MACs",
    steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "l1" }"#,
    header: FINE_TUNE,
};

/// The small VGG's rows: its 3×3 convolutions but the first (one input
/// channel) decomposed, its 3136 → 256 layer factorised, quantization and
/// filter pruning.
pub const VGG: &[Method] = &[
    Method {
        family: "low rank",
        label: "Tucker-2, 3x3 convs but the first (2x fewer MACs each)",
        steps: r#"select = { kinds = ["conv"], except_first = 1 }
method = { name = "tucker2", rank = { speedup = 2.0 } }"#,
        header: FINE_TUNE,
    },
    Method {
        family: "low rank",
        label:
            "CP, 3x3 convs but the first (2x fewer MACs each), factors fine-tuned at 0.1× the rate",
        steps: r#"select = { kinds = ["conv"], except_first = 1 }
method = { name = "cp", rank = { speedup = 2.0 } }"#,
        header: Some("fine_tune = { epochs = 1, lr = 0.001, batch = 64, factor_lr_scale = 0.1 }"),
    },
    Method {
        family: "low rank",
        label: "CP at 4x fewer MACs per 3x3 conv but the first, factors at 0.1× the rate, distilled",
        steps: r#"select = { kinds = ["conv"], except_first = 1 }
method = { name = "cp", rank = { speedup = 4.0 } }"#,
        header: Some(STRONG_CP),
    },
    Method {
        family: "low rank",
        label: "CP three-way (1x1, 3x3 depthwise, 1x1) at 4x fewer MACs per 3x3 conv but the first, factors at 0.1× the rate, distilled",
        steps: r#"select = { kinds = ["conv"], except_first = 1 }
method = { name = "cp", rank = { speedup = 4.0 }, form = "three-way" }"#,
        header: Some(STRONG_CP),
    },
    Method {
        family: "low rank",
        label: "Tucker-2 at 4x fewer MACs per 3x3 conv but the first, distilled",
        steps: r#"select = { kinds = ["conv"], except_first = 1 }
method = { name = "tucker2", rank = { speedup = 4.0 } }"#,
        header: Some(STRONG_TUCKER),
    },
    Method {
        family: "low rank",
        label: "SVD, classifier.0 (4x fewer MACs)",
        steps: r#"select = { names = ["classifier.0"] }
method = { name = "svd", rank = { speedup = 4.0 } }"#,
        header: FINE_TUNE,
    },
    INT8,
    KMEANS,
    FILTER_PRUNING,
    Method {
        family: "quantization",
        label: "binary weights, QAT (not first/last)",
        steps: r#"select = { kinds = ["conv", "linear"], except_first = 1, except_last = 1 }
method = { name = "binarize", kind = "binary-weights" }"#,
        header: QAT,
    },
];

/// The small MobileNet's rows: channel pruning through the depthwise
/// convolutions, quantization (int8 of every layer, and with the depthwise
/// convolutions left in f32), and binary or ternary
/// pointwise convolutions (`model.{i}.3`).
pub const MOBILENET: &[Method] = &[
    FILTER_PRUNING,
    Method {
        family: "pruning",
        label: "channel pruning (APoZ), half the MACs",
        steps: r#"method = { name = "prune-channels", target = "macs", fraction = 0.5, multiple = 1, criterion = "apoz" }"#,
        header: FINE_TUNE,
    },
    INT8,
    Method {
        family: "quantization",
        label: "int8 post-training (calibrated), depthwise convs kept in f32",
        steps: r#"select = { names = ["model.0.0", "model.?.3", "fc"] }
method = { name = "int8", granularity = "per-channel" }"#,
        header: POST_TRAINING,
    },
    KMEANS,
    Method {
        family: "quantization",
        label: "binary weights, QAT, pointwise convs",
        steps: r#"select = { names = ["model.?.3"] }
method = { name = "binarize", kind = "binary-weights" }"#,
        header: QAT,
    },
    Method {
        family: "quantization",
        label: "ternary (TWN), QAT, pointwise convs",
        steps: r#"select = { names = ["model.?.3"] }
method = { name = "ternarize", granularity = "per-channel" }"#,
        header: QAT,
    },
];
