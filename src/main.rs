//! The `int8cal` binary: parses the command line and hands it to `int8cal::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = int8cal::cli::Cli::parse();
    match int8cal::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
