use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the boot-storm profile spent 11% of the server's CPU in glibc (malloc,
/// free, consolidation), and glibc kept the inventory parser's freed memory resident (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    sipcfg::cli::main(sipcfg::cli::Cli::parse())
}
