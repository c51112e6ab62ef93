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

/// `cmd` without its hidden subcommands (`__serve`, which only `cfs mount`
/// runs): the generators list those too, and clap can't remove a subcommand,
/// so the top level is rebuilt from the same arguments and the visible ones.
fn visible(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new("cfs")
        .version(super::VERSION)
        .subcommand_required(true)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    out
}

/// Writes the script to stdout.
pub fn run(a: &CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        a.shell,
        &mut visible(super::cfs_command()),
        "cfs",
        &mut script,
    );
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    Ok(out.flush()?)
}
