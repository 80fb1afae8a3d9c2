//! The online run as a picture (docs/bench.md): write and read latency
//! over time, the migration's states as bands behind them, the write goal
//! as a line. A stall shows at a glance where a table of percentiles
//! hides it. Plain SVG, written by hand: one file per backend.

use std::fmt::Write as _;

/// One call as the chart needs it.
pub(crate) struct Point {
    /// When it started, in seconds since the run began.
    pub(crate) at_s: f64,
    /// How long it took, in milliseconds.
    pub(crate) ms: f64,
    /// A write (or a read).
    pub(crate) write: bool,
    /// The migration's state when it started (`kv` before it).
    pub(crate) state: &'static str,
}

const W: f64 = 960.0;
const H: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 84.0;
/// Latency axis: 0.1 ms to 10 s, logarithmic.
const LOG_MIN: f64 = -1.0;
const LOG_MAX: f64 = 4.0;
/// Calls are summarised per bucket of this many seconds.
const BUCKET_S: f64 = 0.1;

fn band_colour(state: &str) -> &'static str {
    match state {
        "kv" => "#f4f4f4",
        "starting" | "copying" => "#fff3c4",
        "catching_up" => "#dff3d8",
        "committing_copy" => "#ffe0b8",
        "cutting_over" => "#ffc9c9",
        "switched" => "#dbe9ff",
        _ => "#eeeeee",
    }
}

/// The chart of `points` (in any order), titled `title`, as SVG text.
pub(crate) fn svg(title: &str, points: &[Point], goal_ms: f64) -> String {
    let mut pts: Vec<&Point> = points.iter().collect();
    pts.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let end = pts.last().map_or(1.0, |p| p.at_s).max(1.0);
    let x = |s: f64| LEFT + (W - LEFT - RIGHT) * s / end;
    let y = |ms: f64| {
        let l = ms.max(1e-3).log10().clamp(LOG_MIN, LOG_MAX);
        TOP + (H - TOP - BOTTOM) * (LOG_MAX - l) / (LOG_MAX - LOG_MIN)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    // The states as bands, each labelled once where it is widest.
    let mut bands: Vec<(&'static str, f64, f64)> = Vec::new();
    for p in &pts {
        match bands.last_mut() {
            Some((s, _, to)) if *s == p.state => *to = p.at_s,
            _ => bands.push((p.state, p.at_s, p.at_s)),
        }
    }
    let mut labelled = std::collections::HashSet::new();
    let mut widest: Vec<(&'static str, f64, f64)> = bands.clone();
    widest.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
    for (state, from, to) in &bands {
        let (x0, x1) = (x(*from), x(*to).max(x(*from) + 1.0));
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
            x1 - x0,
            H - TOP - BOTTOM,
            band_colour(state)
        );
    }
    for (state, from, to) in &widest {
        // Narrow bands are named by the key below the axis only.
        if x(*to) - x(*from) >= 60.0 && labelled.insert(*state) {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                (x(*from) + x(*to)) / 2.0,
                H - BOTTOM + 30.0,
                state.replace('_', " ")
            );
        }
    }
    // Axes: latency decades, seconds.
    for d in (LOG_MIN as i32)..=(LOG_MAX as i32) {
        let ms = 10f64.powi(d);
        let yy = y(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            if ms < 1.0 {
                format!("{ms} ms")
            } else if ms < 1000.0 {
                format!("{ms:.0} ms")
            } else {
                format!("{:.0} s", ms / 1000.0)
            }
        );
    }
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0]
        .into_iter()
        .find(|s| end / s <= 12.0)
        .unwrap_or(120.0);
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            x(t),
            H - BOTTOM + 14.0
        );
        t += step;
    }
    let gy = y(goal_ms);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#b00" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#b00">write goal (p99) {goal_ms} ms</text>"##,
        W - RIGHT,
        W - RIGHT - 4.0,
        gy - 4.0
    );
    // Per bucket: the slowest write, the median write, the slowest read.
    let lines: [(&str, bool, f64, &str); 3] = [
        ("slowest read", false, 1.0, "#3a6fd8"),
        ("median write", true, 0.5, "#f08c8c"),
        ("slowest write", true, 1.0, "#c21d1d"),
    ];
    for (i, (name, write, q, colour)) in lines.iter().enumerate() {
        let mut path = String::new();
        let mut bucket: Vec<f64> = Vec::new();
        let mut at = 0usize;
        let n = (end / BUCKET_S).ceil() as usize + 1;
        let mut idx = 0;
        for b in 0..n {
            let hi = (b as f64 + 1.0) * BUCKET_S;
            bucket.clear();
            while idx < pts.len() && pts[idx].at_s < hi {
                if pts[idx].write == *write {
                    bucket.push(pts[idx].ms);
                }
                idx += 1;
            }
            if bucket.is_empty() {
                continue;
            }
            bucket.sort_by(f64::total_cmp);
            let v = bucket[((bucket.len() - 1) as f64 * q).round() as usize];
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if at == 0 { "M" } else { " L" },
                x((b as f64 + 0.5) * BUCKET_S),
                y(v)
            );
            at += 1;
        }
        let _ = writeln!(
            out,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.2"/>"#
        );
        let lx = LEFT + 10.0 + 130.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            TOP + 12.0,
            lx + 18.0,
            TOP + 12.0,
            lx + 22.0,
            TOP + 16.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{:.1}" fill="#555">per {:.0} ms of calls, by the time each started; bands: the migration's state then:</text>"##,
        H - 24.0,
        BUCKET_S * 1000.0
    );
    // A key of the states the run went through, in their order.
    let mut kx = LEFT;
    let mut seen = std::collections::HashSet::new();
    for (state, _, _) in &bands {
        if !seen.insert(*state) {
            continue;
        }
        let name = state.replace('_', " ");
        let _ = writeln!(
            out,
            r##"<rect x="{kx:.1}" y="{:.1}" width="10" height="10" fill="{}" stroke="#999"/><text x="{:.1}" y="{:.1}" fill="#555">{name}</text>"##,
            H - 15.0,
            band_colour(state),
            kx + 13.0,
            H - 6.0
        );
        kx += 20.0 + 6.0 * name.len() as f64;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
