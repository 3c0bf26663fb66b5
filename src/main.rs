use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sipcfg::cli::main(sipcfg::cli::Cli::parse())
}
