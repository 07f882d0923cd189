//! The plots, as SVG files (plotters): latency histograms and throughput
//! curves.

use plotters::{
    coord::{
        Shift,
        ranged1d::{AsRangedCoord, ValueFormatter},
    },
    prelude::*,
};
use std::path::Path;

const SIZE: (u32, u32) = (800, 480);
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
/// Histogram bins: (start ms, end ms, count).
pub type Bins = Vec<(f64, f64, usize)>;

/// Overlaid histograms, one per series of (bin start, bin end, count), in
/// milliseconds.
pub fn histograms(path: &Path, title: &str, series: &[(&str, Bins)]) -> Result {
    let x_max = series
        .iter()
        .flat_map(|(_, bins)| bins.iter().map(|b| b.1))
        .fold(0.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, bins)| bins.iter().map(|b| b.2))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let root = canvas(path)?;
    let mut chart = titled(&root, title, 60).build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("requests")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, bins)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(bins.iter().map(|&(start, end, count)| {
                Rectangle::new(
                    [(start, 0.0), (end, count as f64)],
                    color.mix(0.45).filled(),
                )
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Lines through points, one per series, on a logarithmic x axis.
pub fn lines(
    path: &Path,
    title: &str,
    descs: (&str, &str),
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result {
    let x_max = x_max(series);
    draw_lines(path, title, descs, series, (1.0..x_max * 1.1).log_scale())
}

/// Lines through points, one per series, on a linear x axis from 0.
#[allow(dead_code)] // the simulation's
pub fn linear_lines(
    path: &Path,
    title: &str,
    descs: (&str, &str),
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result {
    let x_max = x_max(series);
    draw_lines(path, title, descs, series, 0.0..x_max * 1.05)
}

fn x_max(series: &[(&str, Vec<(f64, f64)>)]) -> f64 {
    series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(1.0, f64::max)
}

fn draw_lines<X>(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[(&str, Vec<(f64, f64)>)],
    x_axis: X,
) -> Result
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let y_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(1.0, f64::max);
    let root = canvas(path)?;
    let mut chart = titled(&root, title, 80).build_cartesian_2d(x_axis, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// A white SVG canvas at `path`.
fn canvas(
    path: &Path,
) -> std::result::Result<DrawingArea<SVGBackend<'_>, Shift>, Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A chart on `root` with `title` and room for the axes' labels.
fn titled<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    y_label_area: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_label_area);
    builder
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}
