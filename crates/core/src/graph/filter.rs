//! [`NodeFilter`]: which nodes of a graph a transform applies to — by name
//! pattern, op kind or predicate, combined with `and`, `or`, `!` and
//! "all but the first / last" (the survey's methods usually spare the first
//! and last layers).

use std::fmt;
use std::sync::Arc;

use super::{Graph, Node};

type Select = dyn Fn(&Graph) -> Vec<bool> + Send + Sync;

/// A selection of graph nodes: by name pattern, op kind or predicate,
/// combined with `and`, `or`, `!` and "all but the first / last".
///
/// ```
/// use hasten_core::graph::NodeFilter;
/// // Every convolution of the residual stages except the last one selected.
/// let filter = NodeFilter::kind("conv").and(NodeFilter::name("layer*")).except_last(1);
/// assert_eq!(filter.to_string(), "((kind conv and name layer*) but the last 1)");
/// ```
#[derive(Clone)]
pub struct NodeFilter {
    select: Arc<Select>,
    description: String,
}

impl NodeFilter {
    fn from_fn(
        description: String,
        select: impl Fn(&Graph) -> Vec<bool> + Send + Sync + 'static,
    ) -> Self {
        NodeFilter {
            select: Arc::new(select),
            description,
        }
    }

    fn per_node(description: String, test: impl Fn(&Node) -> bool + Send + Sync + 'static) -> Self {
        NodeFilter::from_fn(description, move |g| g.nodes().iter().map(&test).collect())
    }

    /// Every node.
    pub fn all() -> Self {
        NodeFilter::per_node("all".into(), |_| true)
    }

    /// Nodes whose name matches the glob `pattern` (`*` any run of
    /// characters, `?` one character), e.g. `layer?.*.conv*`.
    pub fn name(pattern: &str) -> Self {
        let p: Vec<char> = pattern.chars().collect();
        NodeFilter::per_node(format!("name {pattern}"), move |n| glob(&p, n.name()))
    }

    /// Nodes whose op kind is `kind` (`conv`, `linear`, `batch_norm`,
    /// `block`, `add`, …; see [`super::NodeOp::kind`]).
    pub fn kind(kind: &str) -> Self {
        let k = kind.to_string();
        NodeFilter::per_node(format!("kind {kind}"), move |n| n.kind() == k)
    }

    /// Nodes for which `test` holds.
    pub fn predicate(
        description: &str,
        test: impl Fn(&Node) -> bool + Send + Sync + 'static,
    ) -> Self {
        NodeFilter::per_node(description.to_string(), test)
    }

    /// Nodes selected by both filters.
    pub fn and(self, other: NodeFilter) -> Self {
        let description = format!("({self} and {other})");
        NodeFilter::from_fn(description, move |g| {
            let (a, b) = ((self.select)(g), (other.select)(g));
            a.iter().zip(&b).map(|(&x, &y)| x && y).collect()
        })
    }

    /// Nodes selected by either filter.
    pub fn or(self, other: NodeFilter) -> Self {
        let description = format!("({self} or {other})");
        NodeFilter::from_fn(description, move |g| {
            let (a, b) = ((self.select)(g), (other.select)(g));
            a.iter().zip(&b).map(|(&x, &y)| x || y).collect()
        })
    }

    /// This selection without its first `n` nodes (in topological order).
    pub fn except_first(self, n: usize) -> Self {
        let description = format!("({self} but the first {n})");
        NodeFilter::from_fn(description, move |g| {
            let mut mask = (self.select)(g);
            mask.iter_mut()
                .filter(|x| **x)
                .take(n)
                .for_each(|x| *x = false);
            mask
        })
    }

    /// This selection without its last `n` nodes (in topological order).
    pub fn except_last(self, n: usize) -> Self {
        let description = format!("({self} but the last {n})");
        NodeFilter::from_fn(description, move |g| {
            let mut mask = (self.select)(g);
            mask.iter_mut()
                .rev()
                .filter(|x| **x)
                .take(n)
                .for_each(|x| *x = false);
            mask
        })
    }

    /// The indices of the selected nodes of `graph`, in topological order.
    pub fn select(&self, graph: &Graph) -> Vec<usize> {
        (self.select)(graph)
            .into_iter()
            .enumerate()
            .filter_map(|(i, x)| x.then_some(i))
            .collect()
    }
}

/// `!filter`: the nodes `filter` does not select.
impl std::ops::Not for NodeFilter {
    type Output = NodeFilter;

    fn not(self) -> NodeFilter {
        let description = format!("not {self}");
        NodeFilter::from_fn(description, move |g| {
            (self.select)(g).into_iter().map(|x| !x).collect()
        })
    }
}

impl fmt::Display for NodeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl fmt::Debug for NodeFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeFilter({})", self.description)
    }
}

/// Glob match of `text` against `pattern` (`*`, `?`), linear-time with one
/// backtrack point.
fn glob(pattern: &[char], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < t.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == t[i]) {
            p += 1;
            i += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;
    use proptest::prelude::*;

    /// Brute-force glob by recursion on the definition.
    fn glob_brute(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|k| glob_brute(rest, &t[k..])),
            Some((&c, rest)) => {
                !t.is_empty() && (c == '?' || c == t[0]) && glob_brute(rest, &t[1..])
            }
        }
    }

    #[test]
    fn glob_examples() {
        let m = |p: &str, t: &str| glob(&p.chars().collect::<Vec<_>>(), t);
        assert!(m("layer?.*.conv*", "layer1.0.conv2"));
        assert!(!m("layer?.*.conv*", "layer1.0.bn1"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("a*b*c", "aXbYbZc"));
    }

    proptest! {
        #[test]
        fn glob_equals_brute_force(p in "[ab*?]{0,6}", t in "[ab]{0,8}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(glob(&pc, &t), glob_brute(&pc, &tc));
        }
    }
}
