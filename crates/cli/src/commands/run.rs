//! `hasten run`: an NCHW float32 batch through the fast plan.

use std::path::Path;

use hasten_core::ndarray::{Array4, Ix4};

use crate::error::{fail, Context, Result};
use crate::model::{check_shape, compile, load, single_input, ModelArgs};

fn read_input(path: &Path) -> Result<Array4<f32>> {
    let bytes = std::fs::read(path).context(|| format!("cannot read {}", path.display()))?;
    let array = hasten_onnx::weights::read_npy(&bytes)
        .context(|| format!("cannot read {}", path.display()))?;
    let shape = array.shape().to_vec();
    array.into_dimensionality::<Ix4>().map_err(|_| {
        fail(format!(
            "{}: shape {shape:?} is not an N×C×H×W batch",
            path.display()
        ))
    })
}

pub(crate) fn run_model(args: &ModelArgs, input: &Path, output: &Path) -> Result<()> {
    let x = read_input(input)?;
    let graph = load(args, x.shape()[0])?;
    let shape = single_input(&graph)?;
    check_shape(shape, x.shape(), &input.display().to_string())?;
    let mut plan = compile(&graph, x.shape()[0])?;
    let y = {
        let outputs = plan
            .run_all(&[&x])
            .context(|| "running the plan failed".into())?;
        outputs
            .get(0)
            .ok_or_else(|| fail("the model has no outputs"))?
            .to_owned()
    };
    let bytes = hasten_onnx::weights::write_npy(&y.into_dyn())
        .context(|| "cannot encode the output".into())?;
    std::fs::write(output, bytes).context(|| format!("cannot write {}", output.display()))?;
    let s = plan.output_shape();
    println!("wrote {} ({} × {})", output.display(), plan.batch(), s);
    Ok(())
}
