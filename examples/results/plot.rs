//! The speed/accuracy plot in the style of the survey's Fig. 2: one
//! labelled point per method, measured whole-network speed-up on the x axis
//! and the drop in test accuracy on the y axis, drawn as SVG by `plotters`
//! (no system fonts: the SVG holds its labels as text).

use std::path::Path;

use plotters::prelude::*;

/// One method's point.
pub struct Point {
    /// The method.
    pub label: String,
    /// Measured whole-network speed-up.
    pub speedup: f64,
    /// Accuracy drop in percentage points (negative: a gain).
    pub drop: f64,
}

/// Drops up to this many points are drawn again, enlarged, below the
/// overview.
const ZOOM: f64 = 3.0;

/// Writes the plot of `points` to `path`: every method above, the methods
/// within [`ZOOM`] points of the original accuracy enlarged below.
pub fn write_svg(
    path: &Path,
    points: &[Point],
    threads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(500);
    let x_max = points.iter().map(|p| p.speedup).fold(2.0, f64::max) * 1.3;
    let x_min = points
        .iter()
        .map(|p| p.speedup)
        .fold(1.0, f64::min)
        .min(0.9)
        * 0.9;
    let y_min = points.iter().map(|p| p.drop).fold(0.0, f64::min) - 0.2;
    let y_max = points.iter().map(|p| p.drop).fold(1.0, f64::max) * 1.1;
    let all: Vec<&Point> = points.iter().collect();
    panel(
        &top,
        "LeNet-5 on MNIST: measured speed-up and accuracy drop per method",
        &all,
        (x_min..x_max, y_min..y_max),
        threads,
    )?;
    let near: Vec<&Point> = points.iter().filter(|p| p.drop <= ZOOM).collect();
    panel(
        &bottom,
        &format!("the methods within {ZOOM} points of the original accuracy"),
        &near,
        (x_min..x_max, y_min..ZOOM + 0.2),
        threads,
    )?;
    root.present()?;
    Ok(())
}

/// One chart of `points` on `area` with the axis ranges `(x, y)`.
fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    points: &[&Point],
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    threads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (x_min, x_max, y_min, y_max) = (x.start, x.end, y.start, y.end);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "measured whole-network speed-up (batch 1, {threads} threads)"
        ))
        .y_desc("accuracy drop (percentage points)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(x_min, 0.0), (x_max, 0.0)],
        BLACK.mix(0.4),
    ))?;
    chart.draw_series(LineSeries::new(
        [(1.0, y_min), (1.0, y_max)],
        BLACK.mix(0.4),
    ))?;
    chart.draw_series(points.iter().enumerate().map(|(i, p)| {
        let colour = Palette99::pick(i).to_rgba();
        EmptyElement::at((p.speedup, p.drop))
            + Circle::new((0, 0), 5, colour.filled())
            + Text::new(p.label.clone(), (8, -6), ("sans-serif", 13).into_font())
    }))?;
    Ok(())
}
