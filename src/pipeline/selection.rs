//! [`Selection`]: which nodes a recipe step compresses — name globs, op kinds
//! and "all but the first / last" (the survey's methods usually spare the
//! first and last layers, section 1) — as a serialisable form of
//! [`NodeFilter`].

use hasten_core::graph::{Node, NodeFilter, NodeOp};
use hasten_core::Graph;
use serde::{Deserialize, Serialize};

/// A node selection: nodes matching any of `names` and any of `kinds` (a
/// missing list matches every node), without the first `except_first` and
/// the last `except_last` of them in topological order.
///
/// A kind matches a node holding an op of that kind and a node holding a
/// block (an earlier step's output) with an op of that kind inside, so that
/// `kinds = ["conv"]` after Tucker-2 selects its factors.
///
/// # Errors
/// Deserialising refuses an unknown field; a selection itself never fails
/// (one that picks nothing is refused by the step that applies it).
///
/// ```
/// use hasten::models::{lenet5, ModelConfig};
/// use hasten::pipeline::Selection;
///
/// // A recipe step's `select = { kinds = ["linear"], except_last = 1 }`:
/// // every linear layer but the classifier.
/// let s: Selection = toml::from_str("kinds = [\"linear\"]\nexcept_last = 1")?;
/// let g = lenet5(&ModelConfig::mnist())?;
/// let picked: Vec<&str> = s.filter().select(&g).into_iter().map(|i| g.nodes()[i].name()).collect();
/// assert_eq!(picked, ["fc1", "fc2"]);
/// assert!(toml::from_str::<Selection>("kind = [\"conv\"]").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Name globs (`*` any run of characters, `?` one), e.g. `layer?.*.conv*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Op kinds (`conv`, `linear`, …; see `hasten_core::Operator::kind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Spare the first this many selected nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub except_first: usize,
    /// Spare the last this many selected nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub except_last: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Selection {
    /// Convolutions and linear layers.
    pub fn layers() -> Self {
        Selection {
            kinds: vec!["conv".into(), "linear".into()],
            ..Selection::default()
        }
    }

    /// The equivalent [`NodeFilter`].
    pub fn filter(&self) -> NodeFilter {
        let any = |filters: Vec<NodeFilter>| filters.into_iter().reduce(NodeFilter::or);
        let names = any(self.names.iter().map(|p| NodeFilter::name(p)).collect());
        let kinds = any(self.kinds.iter().map(|k| kind(k)).collect());
        let mut filter = match (names, kinds) {
            (Some(n), Some(k)) => n.and(k),
            (Some(f), None) | (None, Some(f)) => f,
            (None, None) => NodeFilter::all(),
        };
        if self.except_first > 0 {
            filter = filter.except_first(self.except_first);
        }
        if self.except_last > 0 {
            filter = filter.except_last(self.except_last);
        }
        filter
    }
}

/// Nodes of kind `k`, or holding a block with an op of kind `k`.
fn kind(k: &str) -> NodeFilter {
    let owned = k.to_string();
    NodeFilter::predicate(&format!("kind {k}"), move |node| match node.op() {
        NodeOp::Block(b) => b.ops().iter().any(|op| op.kind() == owned),
        op => op.kind() == owned,
    })
}

/// The nodes `filter` selects whose op kind `accepts`, and the names of the
/// other selected nodes (skipped). A block an earlier step produced that
/// `accepts` refuses is an error (`block_reason` says why the step cannot
/// take it), and so is a
/// selection with no accepted node (`wanted` names what the step looks
/// for). Errors are messages for the step's error.
pub(super) fn plain_layers<'g>(
    graph: &'g Graph,
    filter: &NodeFilter,
    accepts: impl Fn(&str) -> bool,
    block_reason: &str,
    wanted: &str,
) -> Result<(Vec<&'g Node>, Vec<String>), String> {
    let mut layers = Vec::new();
    let mut skipped = Vec::new();
    for index in filter.select(graph) {
        let node = &graph.nodes()[index];
        match node.kind() {
            kind if accepts(kind) => layers.push(node),
            "block" => {
                return Err(format!(
                    "node {} is a block of an earlier step: {block_reason}",
                    node.name()
                ))
            }
            _ => skipped.push(node.name().to_string()),
        }
    }
    if layers.is_empty() {
        return Err(format!("the selection ({filter}) holds no {wanted}"));
    }
    Ok((layers, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasten_models::{lenet5, ModelConfig};

    fn names(s: &Selection, g: &hasten_core::Graph) -> Vec<String> {
        s.filter()
            .select(g)
            .into_iter()
            .map(|i| g.nodes()[i].name().to_string())
            .collect()
    }

    #[test]
    fn selections_match_names_kinds_and_positions() {
        let g = lenet5(&ModelConfig::mnist()).unwrap();
        let layers = Selection::layers();
        assert_eq!(names(&layers, &g), ["conv1", "conv2", "fc1", "fc2", "fc3"]);
        let inner = Selection {
            except_first: 1,
            except_last: 1,
            ..layers.clone()
        };
        assert_eq!(names(&inner, &g), ["conv2", "fc1", "fc2"]);
        let fc = Selection {
            names: vec!["fc*".into(), "conv1".into()],
            kinds: vec!["linear".into()],
            ..Selection::default()
        };
        assert_eq!(names(&fc, &g), ["fc1", "fc2", "fc3"]);
        assert_eq!(names(&Selection::default(), &g).len(), g.nodes().len());
    }
}
