//! `cfs completions SHELL`: a script for each shell that names the
//! subcommands and their flags (and not the hidden `__serve`); bash's is
//! sourced and asked to complete, as bash would.

use crate::cfs;
use cfs_testkit::{need, report_skip, require};
use std::process::Command;

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

#[test]
fn every_shell_gets_a_script_naming_the_commands() {
    for shell in SHELLS {
        let script = cfs().ok(["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for word in [
            "create-image",
            "fuse-serve",
            "unmount",
            "fsck",
            "compute-id",
            "completions",
            // Flags, spelled `--json` or (fish) `-l json`.
            "json",
            "lock-timeout",
            "read-write",
        ] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
        // (`fuse-serve` becomes `…fuse__subcmd__serve` in bash's names.)
        assert!(
            !script.replace("subcmd__serve", "").contains("__serve"),
            "{shell} offers the hidden __serve"
        );
    }
    let e = cfs().fails(["completions", "tcsh"]);
    assert!(e.contains("possible values: bash"), "{e}");
}

/// Sources the bash script (after bash-completion's own, when installed) in
/// a fresh `bash -c` and completes `cfs mou`, `cfs oci ` and `cfs mount
/// --fu`: no error, and the words bash would offer.
#[test]
fn bash_completes_subcommands_and_flags() {
    require!(need::tools(&["bash"]));
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("cfs.bash");
    std::fs::write(&file, cfs().ok(["completions", "bash"])).unwrap();
    let framework = "/usr/share/bash-completion/bash_completion";
    if !std::path::Path::new(framework).exists() {
        report_skip("bash-completion is not installed: the script is sourced without it");
    }
    let script = format!(
        r#"set -e
        if [ -r {framework} ]; then . {framework}; fi
        . "$1"
        complete -p cfs
        ask() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
                 _cfs cfs "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
                 echo "$*: ${{COMPREPLY[*]}}"; }}
        ask cfs mou
        ask cfs oci ''
        ask cfs mount --fu
        "#
    );
    let o = Command::new("bash")
        .args(["-c", &script, "bash"])
        .arg(&file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.is_empty(), "{err}\n{out}");
    assert!(out.contains("-F _cfs cfs"), "{out}");
    let line = |prefix: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(line("cfs mou: "), ["mount", "mounts", "mount-service"]);
    let oci = line("cfs oci : ");
    for sub in ["pull", "images", "inspect", "rm", "mount", "compute-id"] {
        assert!(oci.contains(&sub.to_owned()), "{oci:?}");
    }
    assert_eq!(line("cfs mount --fu: "), ["--fuse"]);
}

/// zsh and fish, where installed, parse their scripts.
#[test]
fn zsh_and_fish_parse_their_scripts() {
    let t = tempfile::tempdir().unwrap();
    for (shell, check) in [("zsh", "-n"), ("fish", "--no-execute")] {
        if !need::have_tool(shell) {
            report_skip(&format!("{shell} is not installed"));
            continue;
        }
        let file = t.path().join(shell);
        std::fs::write(&file, cfs().ok(["completions", shell])).unwrap();
        let o = Command::new(shell).arg(check).arg(&file).output().unwrap();
        assert!(
            o.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
