//! `bulkhead units`: every unit this build knows, whether it is usable on this machine, and why not.

use std::path::PathBuf;

use bulkhead_core::{Availability, Unit};
use bulkhead_supervisor::history::unix_now;
use bulkhead_supervisor::History;
use serde::Serialize;

use super::common::engines;

/// Arguments of `bulkhead units`.
#[derive(Debug, clap::Args)]
pub struct UnitsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the crash history is kept (default: $XDG_STATE_HOME/bulkhead).
    #[arg(long, env = "BULKHEAD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Forget every recorded crash and quarantine (units get a fresh chance at the next start).
    #[arg(long)]
    clear_history: bool,
}

#[derive(Serialize)]
struct Row {
    unit: Unit,
    usable: bool,
    state: &'static str,
    reason: Option<String>,
}

impl UnitsArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let state_dir = self.state_dir.clone().unwrap_or_else(bulkhead_core::install::state_dir);
        if self.clear_history {
            let had = History::clear(&state_dir)
                .map_err(|e| anyhow::anyhow!("cannot clear the crash history in {}: {e}", state_dir.display()))?;
            eprintln!(
                "{} {}",
                if had { "cleared the crash history in" } else { "no crash history in" },
                state_dir.display()
            );
        }
        let history = History::load(&state_dir);
        let now = unix_now();
        let records: Vec<serde_json::Value> = history
            .records()
            .map(|r| {
                serde_json::json!({
                    "model": r.model, "digest": r.digest, "unit": r.unit, "runtime": r.runtime,
                    "crashes": r.total_crashes, "last_exit": r.crashes.last().map(|c| c.exit.clone()),
                    "quarantined": r.is_quarantined(now),
                    "quarantined_for_s": r.quarantined_until.filter(|&t| t > now).map(|t| (t - now).round()),
                })
            })
            .collect();
        let engines = engines();
        let rows: Vec<Row> = Unit::all()
            .into_iter()
            .map(|unit| {
                let (state, reason) = match engines.availability(&unit) {
                    Availability::Usable => ("usable", None),
                    Availability::NotCompiled(r) => ("not_compiled", Some(r)),
                    Availability::Unusable(r) => ("unusable", Some(r)),
                };
                Row { unit, usable: state == "usable", state, reason }
            })
            .collect();
        if self.json {
            let doc = serde_json::json!({ "units": rows, "crash_history": records, "state_dir": state_dir });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }
        let width = rows.iter().map(|r| r.unit.to_string().len()).max().unwrap_or(10);
        println!("{:width$}  {:12}  reason", "unit", "state");
        for r in &rows {
            println!("{:width$}  {:12}  {}", r.unit.to_string(), r.state, r.reason.as_deref().unwrap_or(""));
        }
        if !records.is_empty() {
            println!("\ncrash history ({}; clear with --clear-history):", state_dir.display());
            for r in &records {
                let q = match r["quarantined_for_s"].as_f64() {
                    Some(s) => format!("QUARANTINED for {s:.0} s"),
                    None => "not quarantined".into(),
                };
                println!(
                    "  {} on {} ({}): {} crashes, last {}; {q}",
                    r["model"].as_str().unwrap_or(""),
                    r["unit"].as_str().unwrap_or(""),
                    r["runtime"].as_str().unwrap_or(""),
                    r["crashes"],
                    r["last_exit"].as_str().unwrap_or("-"),
                );
            }
        }
        Ok(())
    }
}
