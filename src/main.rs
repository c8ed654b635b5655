//! The `int8cal` binary: parses the command line and hands it to `int8cal::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Intel's calibrator spells some flags as multi-letter single-dash options (`-1st`, `-fc`).
    let args = int8cal::cli::calibrate::intel_spellings(std::env::args());
    let cli = int8cal::cli::Cli::parse_from(args);
    match int8cal::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
