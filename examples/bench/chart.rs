//! Charts of the results, as SVG (drawn with plotters; no font or image libraries needed).

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: a contender's median per worker count.
pub struct Curve {
    /// Its legend.
    pub name: String,
    /// (workers, median), workers ascending.
    pub points: Vec<(usize, f64)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Draws `lines` against the number of workers with a log-scale y axis (the backends differ
/// by orders of magnitude).
pub fn draw(
    path: &Path,
    title: &str,
    y_desc: &str,
    lines: &[Curve],
) -> Result<(), Box<dyn std::error::Error>> {
    let xs = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0 as f64));
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let x_max = xs.fold(1.0f64, f64::max);
    let (y_min, y_max) = ys.fold((f64::MAX, 1.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let y_min = (y_min / 2.0).max(1.0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (860, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(86)
        .build_cartesian_2d(0.5f64..x_max + 0.5, (y_min..y_max * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| crate::harness::rate(*y))
        .draw()?;
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = line.points.iter().map(|&(w, y)| (w as f64, y)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
