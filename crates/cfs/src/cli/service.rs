//! `cfs mount-service`: the root daemon (crate `cfs-service`) that makes
//! kernel mounts for unprivileged `cfs mount`; started by hand or by
//! systemd socket activation (`dist/systemd/cfs-mount.{socket,service}`).

/// `cfs mount-service`: serves until killed.
pub fn run(args: &cfs_service::ServiceArgs) -> anyhow::Result<()> {
    cfs_service::run(args)?;
    Ok(())
}
