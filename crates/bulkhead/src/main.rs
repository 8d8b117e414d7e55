//! The `bulkhead` binary: parses the command line and dispatches to one module per subcommand.

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
