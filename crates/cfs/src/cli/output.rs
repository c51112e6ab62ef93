//! Writing results: an image file replaced atomically (temporary file in the
//! same directory, renamed over the target only once complete), or stdout.

use anyhow::{bail, Context};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `data` to `path`, or to stdout when `path` is `-` (refusing a terminal,
/// as C `mkcomposefs` does). On any failure the target is left untouched.
pub fn write_output(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        if out.is_terminal() {
            bail!("stdout is a tty.  Refusing to use it");
        }
        out.write_all(data).context("could not write to stdout")?;
        return out.flush().context("could not write to stdout");
    }
    write_file(path, data)
}

/// Writes `data` to the file `path`, replacing it only once complete.
pub fn write_file(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Mode 0666 before the umask, like fopen(3) in C.
    let mut tmp = tempfile::Builder::new()
        .prefix(".cfs-tmp-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("could not create a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("could not write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("could not rename the output into {}", path.display()))?;
    Ok(())
}
