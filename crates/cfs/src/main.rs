//! `cfs`: the command-line interface (also run as `mkcomposefs` and `composefs-info`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
