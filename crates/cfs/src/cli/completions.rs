//! `cfs completions SHELL`: a completion script for the shell, generated
//! from the same clap definitions that parse the command line (so it never
//! lags behind a new flag). Where each shell looks for it is in the README
//! (`scripts/install.sh` puts bash's, zsh's and fish's there).

use clap::Args;
use clap_complete::Shell;

/// Options of `cfs completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the script to stdout.
pub fn run(a: &CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut super::cfs_command(), "cfs", &mut script);
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    Ok(out.flush()?)
}
