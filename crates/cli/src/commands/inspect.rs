//! `hasten inspect`: the per-node table and totals, and the plan's steps.

use crate::error::{Context, Result};
use crate::model::{check_batch, compile, load, ModelArgs};

pub(crate) fn inspect(args: &ModelArgs, plan: bool, batch: usize) -> Result<()> {
    check_batch(batch)?;
    let graph = load(args, batch)?;
    let summary = graph.summary().context(|| "cannot cost the graph".into())?;
    let inputs: Vec<String> = graph
        .inputs()
        .iter()
        .map(|i| format!("{} {}", i.name(), i.shape()))
        .collect();
    let outputs: Vec<String> = graph
        .output_shapes()
        .iter()
        .map(|s| s.to_string())
        .collect();
    println!(
        "model: {} ({} nodes; inputs: {}; outputs: {})",
        args.model,
        graph.nodes().len(),
        inputs.join(", "),
        outputs.join(", ")
    );
    println!("{summary}");
    if plan {
        let plan = compile(&graph, batch)?;
        println!();
        print!("{plan}");
    }
    Ok(())
}
