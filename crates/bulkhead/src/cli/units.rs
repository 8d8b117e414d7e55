//! `bulkhead units`: every unit this build knows, whether it is usable on this machine, and why not.

use bulkhead_core::{Availability, Unit};
use serde::Serialize;

use super::common::engines;

/// Arguments of `bulkhead units`.
#[derive(Debug, clap::Args)]
pub struct UnitsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "units": rows }))?);
            return Ok(());
        }
        let width = rows.iter().map(|r| r.unit.to_string().len()).max().unwrap_or(10);
        println!("{:width$}  {:12}  reason", "unit", "state");
        for r in &rows {
            println!("{:width$}  {:12}  {}", r.unit.to_string(), r.state, r.reason.as_deref().unwrap_or(""));
        }
        Ok(())
    }
}
