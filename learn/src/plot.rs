//! Loss curves as self-contained SVG files.
//!
//! A training run should leave a picture a browser can open, without a
//! plotting dependency or a script. The SVG is written by hand: axes with
//! "nice" ticks (1, 2 or 5 times a power of ten), one polyline per named
//! series, a legend. The output depends only on the data, with fixed
//! number formatting, so two runs with the same seed write identical
//! files.

use std::fmt::Write as _;
use std::path::Path;

/// One named line of `(x, y)` points, drawn in the given order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A line chart of one or more series sharing axes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plot {
    /// Heading above the chart.
    pub title: String,
    /// Horizontal axis caption, e.g. "examples seen".
    pub x_label: String,
    /// Vertical axis caption, e.g. "held-out log-loss".
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

impl Plot {
    /// An empty chart with its captions.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), series: Vec::new() }
    }

    /// Adds a series.
    pub fn with_series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series { name: name.into(), points });
        self
    }

    /// Writes [`Plot::to_svg`] to `path`.
    pub fn write_svg(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_svg())
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let finite = || {
            self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let x_axis = Axis::fit(finite().map(|(x, _)| x));
        let y_axis = Axis::fit(finite().map(|(_, y)| y));
        let to_pixel = |(x, y): (f64, f64)| {
            (PLOT_LEFT + x_axis.fraction(x) * PLOT_WIDTH, PLOT_TOP + (1.0 - y_axis.fraction(y)) * PLOT_HEIGHT)
        };

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
            PLOT_LEFT + PLOT_WIDTH / 2.0,
            escape(&self.title)
        );
        self.write_axes(&mut svg, &x_axis, &y_axis);
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> =
                series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).map(to_pixel).collect();
            let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.2},{y:.2}")).collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            if let [(x, y)] = points[..] {
                // A lone point draws no line; mark it so it is visible.
                let _ = writeln!(svg, r#"<circle cx="{x:.2}" cy="{y:.2}" r="3" fill="{color}"/>"#);
            }
            let legend_y = PLOT_TOP + 10.0 + 20.0 * i as f64;
            let legend_x = PLOT_LEFT + PLOT_WIDTH + 20.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x:.2}" y1="{legend_y:.2}" x2="{:.2}" y2="{legend_y:.2}" stroke="{color}" stroke-width="2"/>"#,
                legend_x + 20.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
                legend_x + 26.0,
                legend_y + 4.0,
                escape(&series.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }

    fn write_axes(&self, svg: &mut String, x_axis: &Axis, y_axis: &Axis) {
        let (left, top, right, bottom) = (PLOT_LEFT, PLOT_TOP, PLOT_LEFT + PLOT_WIDTH, PLOT_TOP + PLOT_HEIGHT);
        for (value, label) in x_axis.ticks() {
            let x = left + x_axis.fraction(value) * PLOT_WIDTH;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.2}" y1="{top:.2}" x2="{x:.2}" y2="{bottom:.2}" stroke="#e0e0e0"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{label}</text>"##,
                bottom + 18.0
            );
        }
        for (value, label) in y_axis.ticks() {
            let y = top + (1.0 - y_axis.fraction(value)) * PLOT_HEIGHT;
            let _ = writeln!(
                svg,
                r##"<line x1="{left:.2}" y1="{y:.2}" x2="{right:.2}" y2="{y:.2}" stroke="#e0e0e0"/><text x="{:.2}" y="{:.2}" text-anchor="end">{label}</text>"##,
                left - 6.0,
                y + 4.0
            );
        }
        // After the grid, so that the grid lines at the edges do not cover it.
        let _ = writeln!(svg, r#"<path d="M{left:.2},{top:.2} V{bottom:.2} H{right:.2}" fill="none" stroke="black"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            left + PLOT_WIDTH / 2.0,
            bottom + 42.0,
            escape(&self.x_label)
        );
        let (label_x, label_y) = (22.0, top + PLOT_HEIGHT / 2.0);
        let _ = writeln!(
            svg,
            r#"<text x="{label_x:.2}" y="{label_y:.2}" text-anchor="middle" transform="rotate(-90 {label_x:.2} {label_y:.2})">{}</text>"#,
            escape(&self.y_label)
        );
    }
}

/// One axis: a range widened to whole ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    low: f64,
    high: f64,
    step: f64,
}

impl Axis {
    /// The smallest range of whole ticks around `values` (finite), about
    /// `TICKS_TARGET` ticks apart. No values gives `[0, 1]`; a single value
    /// gets a margin around it.
    fn fit(values: impl Iterator<Item = f64>) -> Self {
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (low, high) = if low > high {
            (0.0, 1.0)
        } else if low == high {
            let margin = if low == 0.0 { 1.0 } else { low.abs() / 10.0 };
            (low - margin, high + margin)
        } else {
            (low, high)
        };
        let raw_step = (high - low) / TICKS_TARGET;
        if !raw_step.is_finite() || raw_step <= 0.0 {
            // Spans beyond f64 (or below its resolution): draw the range
            // without inner ticks rather than produce NaNs.
            return Self { low, high, step: high - low };
        }
        let magnitude = 10f64.powi(raw_step.log10().floor() as i32);
        let step = magnitude
            * match raw_step / magnitude {
                r if r < 1.5 => 1.0,
                r if r < 3.0 => 2.0,
                r if r < 7.0 => 5.0,
                _ => 10.0,
            };
        Self { low: (low / step).floor() * step + 0.0, high: (high / step).ceil() * step + 0.0, step }
    }

    /// Where `value` sits, 0 at `low` and 1 at `high`.
    fn fraction(&self, value: f64) -> f64 {
        let span = self.high - self.low;
        if span.is_finite() && span > 0.0 {
            (value - self.low) / span
        } else {
            0.5
        }
    }

    /// `(value, label)` for each tick, labels with as many decimals as the
    /// step needs.
    fn ticks(&self) -> Vec<(f64, String)> {
        let count = ((self.high - self.low) / self.step).round();
        if !count.is_finite() || count < 1.0 {
            return Vec::new();
        }
        let decimals = (-self.step.log10().floor()).clamp(0.0, DECIMALS_MAX) as usize;
        let first = (self.low / self.step).round() as i64;
        (0..=(count as i64).min(TICKS_MAX))
            .map(|k| {
                let value = (first + k) as f64 * self.step + 0.0;
                (value, format!("{value:.decimals$}"))
            })
            .collect()
    }
}

/// Escapes text for SVG element content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const PLOT_LEFT: f64 = 80.0;
const PLOT_TOP: f64 = 50.0;
const PLOT_WIDTH: f64 = 560.0;
const PLOT_HEIGHT: f64 = 360.0;
const TICKS_TARGET: f64 = 5.0;
/// Ticks drawn at most per axis (the rounding of `fit` gives about 5–12).
const TICKS_MAX: i64 = 20;
const DECIMALS_MAX: f64 = 12.0;
/// Distinguishable line colours, reused in order.
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

#[cfg(test)]
mod tests {
    use super::*;

    fn polylines(svg: &str) -> Vec<&str> {
        svg.lines()
            .filter_map(|line| line.split_once(r#"points=""#).map(|(_, rest)| rest.split('"').next().unwrap()))
            .collect()
    }

    #[test]
    fn points_map_onto_the_plot_area_corners() {
        let svg = Plot::new("t", "x", "y").with_series("a", vec![(0.0, 0.0), (5.0, 0.5), (10.0, 1.0)]).to_svg();
        // x spans [0, 10] and y [0, 1] exactly in whole ticks.
        assert_eq!(polylines(&svg), vec!["80.00,410.00 360.00,230.00 640.00,50.00"]);
        for label in ["0", "2", "4", "6", "8", "10", "0.0", "0.2", "1.0"] {
            assert!(svg.contains(&format!(">{label}</text>")), "no tick {label}");
        }
    }

    #[test]
    fn ranges_widen_to_nice_ticks() {
        let axis = Axis::fit([0.13, 0.71].into_iter());
        assert_eq!((axis.low, axis.high, axis.step), (0.1, 0.8, 0.1));
        let labels: Vec<String> = axis.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]);
        let axis = Axis::fit([-3.0, 17_000.0].into_iter());
        assert_eq!((axis.low, axis.high, axis.step), (-5_000.0, 20_000.0, 5_000.0));
        assert_eq!(axis.ticks()[1].1, "0");
    }

    #[test]
    fn output_is_deterministic_and_escaped() {
        let plot = Plot::new("loss <per> epoch", "x", "y")
            .with_series("sgd & co", vec![(1.0, 0.7), (2.0, 0.6)])
            .with_series("ftrl", vec![(1.0, 0.69), (2.0, 0.5)]);
        let svg = plot.to_svg();
        assert_eq!(svg, plot.to_svg());
        assert!(svg.contains("loss &lt;per&gt; epoch") && svg.contains("sgd &amp; co"));
        assert!(!svg.contains("sgd & co"));
        assert_eq!(polylines(&svg).len(), 2);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn degenerate_data_draws_without_nans() {
        let plots = [
            Plot::new("empty", "x", "y"),
            Plot::new("one", "x", "y").with_series("a", vec![(3.0, 0.25)]),
            Plot::new("flat", "x", "y").with_series("a", vec![(0.0, 0.0), (1.0, 0.0)]),
            Plot::new("bad", "x", "y").with_series("a", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (2.0, 1.0)]),
            Plot::new("huge", "x", "y").with_series("a", vec![(-f64::MAX, 0.0), (f64::MAX, 1.0)]),
        ];
        for plot in plots {
            let svg = plot.to_svg();
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{}: {svg}", plot.title);
            assert!(svg.lines().count() < 100, "{}", plot.title);
        }
        let one = Plot::new("one", "x", "y").with_series("a", vec![(3.0, 0.25)]).to_svg();
        assert!(one.contains("<circle"));
    }

    #[test]
    fn writes_the_file() {
        let path = std::env::temp_dir().join(format!("pslite-plot-test-{}.svg", std::process::id()));
        let plot = Plot::new("t", "x", "y").with_series("a", vec![(0.0, 1.0), (1.0, 0.5)]);
        plot.write_svg(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(written, plot.to_svg());
    }
}
