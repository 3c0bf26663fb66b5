use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sipcfg::cli::Cli::parse();
    sipcfg::cli::init_logging();
    sipcfg::cli::main(cli)
}
