//! The `bulkhead` binary: parses the command line and dispatches to one module per subcommand.
//!
//! # Architecture invariants
//!
//! * **`anyhow` lives only here**; the libraries return typed errors (checked by
//!   `crates/bulkhead-testkit/tests/invariants.rs`). Exit codes (0, 1 runtime, 2 usage) are decided in one place,
//!   `cli/common.rs`.
//! * **`main.rs` only dispatches;** each subcommand module under `cli/` parses its options and calls a library crate
//!   (`doctor` and `bench` are thin over `bulkhead-doctor`, `quantize` over `bulkhead-quantize`).
//! * **An option shared by several commands is defined once** and flattened into each (`common::ModelArgs`:
//!   `--model`, `--tokenizer`, `--compute-units`; `common::ChainArgs`), so its name, variable and help cannot drift.
//! * **`--model` becomes a `ModelFiles` in one function** (`common::open_model`: a path, else a hub id through
//!   `cli/hub.rs`, which picks the weight formats from the chain).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let server = matches!(args.command, cli::Command::Serve(_));
    cli::init_logging(args.verbose, args.log_json, server);
    match args.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit_code(&e);
            cli::print_error(&e, args.verbose > 0);
            ExitCode::from(code)
        }
    }
}
