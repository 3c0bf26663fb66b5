//! `sipcfg manpage` and `sipcfg completions`: the command line described for man and the shells.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::util::fsutil::atomic_write;

/// The command line as clap describes it, as man pages and completions need it.
fn clap_command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// `manpage --out DIR`: sipcfg.1 and one page per subcommand, nested ones too (sipcfg-cluster-set.1).
pub(crate) fn manpage(out: &Path) -> Result<ExitCode, String> {
    fn pages(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, out)?;
        }
        let source = format!("sipcfg {}", env!("CARGO_PKG_VERSION"));
        let man = clap_mangen::Man::new(cmd.clone()).source(source);
        let mut page = Vec::new();
        man.render(&mut page).map_err(|e| format!("cannot render the man page of {}: {e}", cmd.get_name()))?;
        out.push((man.get_filename(), page));
        Ok(())
    }
    let mut cmd = clap_command();
    cmd.build();
    let mut rendered = Vec::new();
    pages(&cmd, &mut rendered)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create the folder: {e}", out.display()))?;
    rendered.sort();
    for (name, page) in &rendered {
        let path = out.join(name);
        atomic_write(&path, page).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    println!("{}: {} manual pages written", out.display(), rendered.len());
    Ok(ExitCode::SUCCESS)
}

/// `completions SHELL`: the script on standard output.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<ExitCode, String> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut clap_command(), "sipcfg", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("cannot write the completion script: {e}")),
    }
}
