//! [`Summary`]: a per-node table of a graph — op, output shape, MACs,
//! parameters and weight bytes — with totals, as `Display`.

use std::fmt;

use super::Graph;
use crate::cost::Cost;
use crate::error::Result;
use crate::shape::ActShape;

/// One row of a [`Summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    /// Node name.
    pub name: String,
    /// Op kind.
    pub kind: &'static str,
    /// Per-sample output shape.
    pub output: ActShape,
    /// Cost per sample.
    pub cost: Cost,
}

/// The per-node costs of a graph and their total, for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// One row per node, in topological order.
    pub rows: Vec<SummaryRow>,
    /// The sum over the rows.
    pub total: Cost,
}

impl Graph {
    /// The per-node cost table of the graph.
    pub fn summary(&self) -> Result<Summary> {
        let rows = self
            .nodes
            .iter()
            .map(|n| {
                Ok(SummaryRow {
                    name: n.name.clone(),
                    kind: n.kind(),
                    output: n.output_shape,
                    cost: n.cost()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let total = rows.iter().map(|r| r.cost).sum();
        Ok(Summary { rows, total })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(4)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:<16} {:>14} {:>12} {:>11} {:>12}",
            "node", "op", "output", "MACs", "params", "bytes"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<width$}  {:<16} {:>14} {:>12} {:>11} {:>12}",
                r.name,
                r.kind,
                r.output.to_string(),
                r.cost.macs,
                r.cost.params,
                r.cost.weight_bytes
            )?;
        }
        write!(
            f,
            "{:<width$}  {:<16} {:>14} {:>12} {:>11} {:>12}",
            "total", "", "", self.total.macs, self.total.params, self.total.weight_bytes
        )
    }
}
