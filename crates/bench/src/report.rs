//! The bench's report: the figures of one run as tables, in the shape
//! docs/bench.md keeps them.

use nodestore::generate::Shape;
use serde_json::{Value, json};

use crate::{Args, git_commit, latency};

/// The online run's table: the figures and the goals at L.
pub(crate) fn report_online(o: &Value, offline_s: f64) {
    let switch = f(&o["seconds_to_switch"]);
    let ratio = if offline_s > 0.0 {
        switch / offline_s
    } else {
        0.0
    };
    println!();
    println!(
        "online migration under load ({} writes/s, {} reads/s; * = missed)",
        o["writes_per_s"], o["reads_per_s"]
    );
    let mark = |missed: bool| if missed { "*" } else { "" };
    println!(
        "{:<36}{:>12.2}   (offline {offline_s:.2} s; ratio {ratio:.2}{}, goal <= 1.5)",
        "time to switch, s",
        switch,
        mark(ratio > 1.5)
    );
    let pause = f(&o["longest_pause_ms"]);
    println!(
        "{:<36}{:>12}   (goal <= 250)",
        "longest write pause, ms",
        format!("{pause:.1}{}", mark(pause > 250.0))
    );
    println!(
        "{:<36}{:>12}",
        "journal peak, keys",
        o["journal_peak_keys"].to_string()
    );
    println!(
        "{:<36}{:>12}   (largest {:.0} MiB; PostgreSQL: one transaction)",
        "copy committed in pieces",
        o["copy_pieces"].to_string(),
        f(&o["largest_piece_mib"])
    );
    if let Some(chart) = o["chart"].as_str() {
        println!("{:<36}{:>12}", "chart", chart);
    }
    let failed = o["failed_calls"].as_u64().unwrap_or(0);
    println!(
        "{:<36}{:>12}   (of {}; goal 0)",
        "failed calls",
        format!("{failed}{}", mark(failed > 0)),
        o["calls"]
    );
    let diffs = o["verify_differences"].as_u64().unwrap_or(0);
    println!(
        "{:<36}{:>12}   (goal 0; {} more from writes after the switch, which went to SQL only)",
        "verify differences",
        format!("{diffs}{}", mark(diffs > 0)),
        o["verify_differences_from_later_writes"]
    );
    println!(
        "{:<36}{:>26}{:>26}{:>26}",
        "latency p50 / p99 / max (µs)", "before (kv)", "during", "after (sql)"
    );
    for kind in ["writes", "reads"] {
        print!("{:<36}", format!("  {kind}"));
        for phase in ["before", "during", "after"] {
            let v = &o["phases"][phase][kind];
            let cell = if v["calls"].as_u64().unwrap_or(0) == 0 {
                "-".to_owned()
            } else {
                let missed = kind == "writes" && phase == "during" && f(&v["p99_us"]) > 50_000.0;
                format!(
                    "{:.0} / {:.0} / {:.0}{}",
                    f(&v["p50_us"]),
                    f(&v["p99_us"]),
                    f(&v["max_us"]),
                    mark(missed)
                )
            };
            print!("{cell:>26}");
        }
        println!();
    }
    if let Some(states) = o["writes_by_state"].as_object() {
        let parts: Vec<String> = states
            .iter()
            .map(|(state, v)| format!("{state} {} of {}", v["slow"], v["writes"]))
            .collect();
        println!(
            "  writes over 50 ms, by the state they began in: {}",
            parts.join(", ")
        );
    }
}

pub(crate) fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// What each phase's process printed.
pub(crate) struct Phases {
    pub(crate) migration: Value,
    pub(crate) limit: Value,
    pub(crate) honest: Value,
    pub(crate) sled: Value,
    pub(crate) reader: Value,
    /// Each run's seconds (migration, honest limit), in the order run;
    /// `migration` and `honest` are the runs of median time.
    pub(crate) runs: Vec<(f64, f64)>,
}

pub(crate) fn report(
    args: &Args,
    scale: &str,
    shape: &Shape,
    phases: &Phases,
    latencies: &[(String, Value)],
) -> Value {
    let Phases {
        migration,
        limit,
        honest,
        sled,
        reader,
        runs,
    } = phases;
    let rows = shape.total_rows() as f64;
    let mig_s = f(&migration["seconds"]);
    let lim_s = f(&limit["seconds"]);
    let ratio = if lim_s > 0.0 { mig_s / lim_s } else { 0.0 };
    let hon_s = f(&honest["seconds"]);
    let honest_ratio = if hon_s > 0.0 { mig_s / hon_s } else { 0.0 };
    println!();
    println!(
        "nodestore bench: scale {scale} ({} rows), backend {}, commit {}",
        shape.total_rows(),
        args.backend,
        git_commit()
    );
    println!(
        "{:<28}{:>12}{:>14}{:>14}",
        "", "seconds", "rows/s", "records/s"
    );
    let store_rows: std::collections::HashMap<&str, u64> = shape.rows().into_iter().collect();
    let mut per_store = Vec::new();
    for s in migration["stores"].as_array().into_iter().flatten() {
        let name = s["store"].as_str().unwrap_or("");
        let secs = f(&s["seconds"]);
        let records = s["records"].as_u64().unwrap_or(0);
        let r = match name {
            "accounts" => store_rows["accounts"],
            "sessions" => store_rows["sessions"],
            "kv-stores" => shape.kv_entries,
            "privacy pairs" => shape.privacy_pairs,
            _ => store_rows["actions"],
        };
        println!(
            "{:<28}{secs:>12.2}{:>14.0}{:>14.0}",
            format!("  migrate {name}"),
            r as f64 / secs.max(1e-9),
            records as f64 / secs.max(1e-9)
        );
        per_store.push(json!({ "store": name, "seconds": secs, "rows": r, "records": records, "rows_per_s": r as f64 / secs.max(1e-9), "records_per_s": records as f64 / secs.max(1e-9) }));
    }
    println!(
        "{:<28}{mig_s:>12.2}{:>14.0}",
        "migration, validated",
        rows / mig_s.max(1e-9)
    );
    println!(
        "{:<28}{lim_s:>12.2}{:>14.0}",
        "limit (simplest loader)",
        rows / lim_s.max(1e-9)
    );
    println!(
        "{:<28}{:>12.2}",
        "  of which reading kv",
        f(&limit["read_seconds"])
    );
    println!(
        "{:<28}{hon_s:>12.2}{:>14.0}",
        "limit (honest: idx after)",
        rows / hon_s.max(1e-9)
    );
    println!(
        "{:<28}{:>12.2}",
        "  of which reading kv",
        f(&honest["read_seconds"])
    );
    println!(
        "{:<28}{honest_ratio:>12.2}   (target <= 1.2)",
        "migration / honest limit"
    );
    if runs.len() > 1 {
        // The figures above are each the median run's.
        let each: Vec<String> = runs
            .iter()
            .map(|(m, h)| format!("{m:.2} / {h:.2} s = {:.2}", m / h.max(1e-9)))
            .collect();
        println!(
            "{:<28}{:>12}   ({} runs in turn, medians above; each: migration / honest)",
            "",
            "",
            runs.len()
        );
        println!("{:<28}{}", "", each.join(";  "));
    }
    println!("{:<28}{ratio:>12.2}", "migration / simplest");
    println!(
        "{:<28}{:>12.0}   (target <= 256)",
        "peak RSS of migration, MiB",
        f(&migration["peak_rss_mib"])
    );
    println!(
        "{:<28}{:>12.0}   (opened: {:.0}; page table {:.1} MiB; target <= 64)",
        "  reader alone reading all",
        f(&reader["peak_rss_mib"]),
        f(&reader["open_peak_rss_mib"]),
        f(&reader["page_table_mib"])
    );
    println!(
        "{:<28}{:>12.0}   (opened: {:.0})",
        "  sled alone reading all",
        f(&sled["peak_rss_mib"]),
        f(&sled["open_peak_rss_mib"])
    );
    println!(
        "{:<28}{:>12.0}",
        "  the migration's own",
        f(&migration["peak_rss_mib"]) - f(&reader["peak_rss_mib"])
    );
    println!(
        "{:<28}{:>12.0}   (target >= 1,000,000; {:.2}s)",
        "reader, records/s",
        f(&reader["records_per_s"]),
        f(&reader["read_seconds"])
    );
    println!(
        "{:<28}{:>12.0}   ({:.2}s)",
        "sled scan, records/s",
        f(&sled["records_per_s"]),
        f(&sled["read_seconds"])
    );
    // Measured unless `--no-latency`.
    if !latencies.is_empty() {
        println!();
        println!(
            "{:<36}{:>16}{:>18}{:>18}   goal sqlite / postgres (p99; * = missed)",
            "latency, median / p99 (µs)", "kv", "sqlite", "postgres"
        );
        for (op, goal) in latency::ops() {
            print!("{op:<36}");
            for backend in ["kv", "sqlite", "postgres"] {
                let width = if backend == "kv" { 16 } else { 18 };
                match latencies.iter().find(|(b, _)| b == backend) {
                    Some((_, v)) => {
                        let (median, p99) = (f(&v[&op]["median_us"]), f(&v[&op]["p99_us"]));
                        let missed = goal
                            .on(backend)
                            .is_some_and(|(m, p)| p99 > p || m.is_some_and(|m| median > m));
                        let mark = if missed { "*" } else { "" };
                        print!("{:>width$}", format!("{median:.0} / {p99:.0}{mark}"));
                    }
                    None => print!("{:>width$}", "-"),
                }
            }
            let shown = |b: &str| match goal.on(b) {
                Some((Some(m), p)) => format!("{m:.0} / {p:.0}"),
                Some((None, p)) => format!("{p:.0}"),
                None => "-".to_owned(),
            };
            println!("   {} | {}", shown("sqlite"), shown("postgres"));
        }
    }
    json!({
        "scale": scale,
        "backend": args.backend,
        "commit": git_commit(),
        "rows": shape.total_rows(),
        "migration": { "seconds": mig_s, "rows_per_s": rows / mig_s.max(1e-9), "peak_rss_mib": migration["peak_rss_mib"], "stores": per_store },
        "limit": { "seconds": lim_s, "read_seconds": limit["read_seconds"], "peak_rss_mib": limit["peak_rss_mib"], "rows": limit["rows"], "rows_per_s": rows / lim_s.max(1e-9) },
        "honest_limit": { "seconds": hon_s, "read_seconds": honest["read_seconds"], "peak_rss_mib": honest["peak_rss_mib"], "rows": honest["rows"], "rows_per_s": rows / hon_s.max(1e-9) },
        "ratio": ratio,
        "honest_ratio": honest_ratio,
        "runs": runs.iter().map(|(m, h)| json!({ "migration_seconds": m, "honest_seconds": h, "ratio": m / h.max(1e-9) })).collect::<Vec<_>>(),
        "sled_alone": sled,
        "reader_alone": reader,
        "latency": latencies.iter().map(|(b, v)| (b.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
    })
}
