//! Choosing a [`MountMode`] for whoever runs `cfs mount`: a pure decision
//! ([`decide`]) over facts a thin prober gathers ([`Facts::probe`]), so the
//! rules are a unit-tested table and the prober only reads the system.
//!
//! The rules (`--fuse=auto`):
//! - **kernel** when the process has `CAP_SYS_ADMIN` in the *initial* user
//!   namespace: erofs and overlayfs can't be mounted from any other;
//! - **service** otherwise, when the mount service (`cfs mount-service`,
//!   at `$CFS_MOUNT_SERVICE` or `/run/cfs/mount.sock`) answers: the same
//!   kernel mount, made by root for this process; should the service refuse
//!   or fail the mount, the decision carries the FUSE mode to fall back to;
//! - **fuse+overlay** with `CAP_SYS_ADMIN` in a user namespace (`unshare
//!   -Urm`, a rootless container), once a probe shows the kernel takes an
//!   overlay with `userxattr` and a data-only lower layer there;
//! - **standalone FUSE** otherwise, mounted by the setuid `fusermount3`.
//!
//! `--upperdir` needs an overlay of one's own: without the kernel mode it
//! means fuse+overlay or an error (service mounts are read-only).
//! `--fuse=yes` skips the kernel and service modes; `--fuse=no` insists on a
//! kernel mount: the kernel mode, or for a process without the privilege,
//! the service, with no FUSE to fall back to.
//!
//! ## Which user namespace are we in
//! Not by the text of `/proc/self/uid_map`: `0 0 4294967295` is what the
//! initial namespace shows, but a child namespace can have the same identity
//! map (systemd's `PrivateUsers=full` makes one), and then a process would
//! believe it may mount erofs and fail. composefs-rs dropped that heuristic
//! for the same reason (composefs-rs#365, after crun#2150), as did crun, moby
//! and incus: the kernel gives the initial user namespace a fixed inode
//! number, `PROC_USER_INIT_INO` = `0xEFFFFFFD` (`include/uapi/linux/nsfs.h`
//! via `proc_ns.h`), so `stat("/proc/self/ns/user")` answers directly, in
//! one call. Comparing with `/proc/1/ns/user` instead would be wrong in a
//! container (pid 1 is the container's init, in the container's namespace)
//! and needs privilege to read; walking up with `NS_GET_PARENT` needs an
//! ioctl and fails with EPERM at the namespace we may not see past. The
//! inode is stable kernel ABI and needs neither.

use crate::MountMode;
use std::path::PathBuf;

/// `--fuse=auto|yes|no|standalone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FuseChoice {
    /// The best mode the caller's privileges allow.
    #[default]
    Auto,
    /// A FUSE mode: fuse+overlay where possible, else standalone.
    Yes,
    /// The kernel mode only.
    No,
    /// Standalone FUSE, even where an overlay could be mounted (what `cfs
    /// fuse-serve` mounts).
    Standalone,
}

/// What this process may do, probed once per command ([`Privilege::probe`])
/// and passed down to everything that depends on it: the mode decision,
/// how FUSE is mounted, whether the server may use passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privilege {
    /// `CAP_SYS_ADMIN` is in the effective set (of the current user namespace).
    pub cap_sys_admin: bool,
    /// The process is in the initial user namespace.
    pub initial_userns: bool,
}

impl Privilege {
    /// Reads this process's capabilities and user namespace.
    pub fn probe() -> Privilege {
        Privilege {
            cap_sys_admin: has_cap_sys_admin(),
            initial_userns: in_initial_userns(),
        }
    }

    /// `CAP_SYS_ADMIN` in the initial user namespace: what erofs and
    /// overlayfs mounts of files, and FUSE passthrough, need.
    pub fn initial_admin(&self) -> bool {
        self.cap_sys_admin && self.initial_userns
    }
}

/// What the prober found out about this process and system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `CAP_SYS_ADMIN` is in the effective set (of the current user namespace).
    pub cap_sys_admin: bool,
    /// The process is in the initial user namespace.
    pub initial_userns: bool,
    /// An overlay with `userxattr` and a data-only lower mounts here: `None`
    /// when not probed (no `CAP_SYS_ADMIN`), else the result, with the
    /// kernel's reason when refused.
    pub userxattr_overlay: Option<Result<(), String>>,
    /// `/dev/fuse` can be opened for reading and writing.
    pub dev_fuse: bool,
    /// Where `fusermount3` is, if on `PATH`.
    pub fusermount3: Option<PathBuf>,
    /// A writable mount (`--upperdir`) was asked for.
    pub upperdir: bool,
    /// The mount service answered: `None` when not asked (the kernel mode
    /// is possible, or not wanted), else the result, with why not.
    pub service: Option<Result<(), String>>,
}

/// The chosen mode and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mode.
    pub mode: MountMode,
    /// Why, in one sentence, for `--explain`.
    pub why: String,
    /// What the process may do, as probed for the decision: mounting
    /// depends on it too, so it is passed down rather than probed again.
    pub privilege: Privilege,
    /// For the service mode under `--fuse=auto`: what to mount with when
    /// the service refuses or fails the mount.
    pub fallback: Option<Box<Decision>>,
}

/// No mode fits: what is missing and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoMode(pub String);

/// Picks the mode for `choice` given `facts`.
pub fn decide(choice: FuseChoice, f: &Facts) -> Result<Decision, NoMode> {
    let privilege = Privilege {
        cap_sys_admin: f.cap_sys_admin,
        initial_userns: f.initial_userns,
    };
    let ok = |mode, why: &str| {
        Ok(Decision {
            mode,
            why: why.to_string(),
            privilege,
            fallback: None,
        })
    };
    let kernel_ok = privilege.initial_admin();
    let service_ok = matches!(f.service, Some(Ok(()))) && !f.upperdir;
    const SERVICE_WHY: &str = "no CAP_SYS_ADMIN in the initial user namespace, and the cfs mount \
                               service answers: it makes the kernel mount (erofs + overlayfs) for us";
    if choice == FuseChoice::No {
        if kernel_ok {
            return ok(
                MountMode::Kernel,
                "--fuse=no, and CAP_SYS_ADMIN in the initial user namespace allows the kernel mount",
            );
        }
        if service_ok {
            return ok(MountMode::Service, SERVICE_WHY);
        }
        return Err(NoMode(format!(
            "--fuse=no: the kernel mount needs CAP_SYS_ADMIN in the initial user namespace ({}), \
             or the cfs mount service ({}); use --fuse=auto to mount with FUSE",
            if f.cap_sys_admin {
                "this process has it only in a user namespace"
            } else {
                "this process lacks it"
            },
            service_state(f),
        )));
    }
    if choice == FuseChoice::Auto && kernel_ok {
        return ok(
            MountMode::Kernel,
            "CAP_SYS_ADMIN in the initial user namespace: erofs + overlayfs in the kernel",
        );
    }
    let fuse = decide_fuse(choice, f, privilege);
    if choice == FuseChoice::Auto && service_ok {
        return Ok(Decision {
            fallback: fuse.ok().map(Box::new),
            ..ok(MountMode::Service, SERVICE_WHY)?
        });
    }
    // Say why the service was not used, where it was asked.
    fuse.map(|mut d| {
        if f.service.is_some() {
            d.why = format!("{}; {}", d.why, service_state(f));
        }
        d
    })
}

/// The mount service's answer, for a reason.
fn service_state(f: &Facts) -> String {
    match &f.service {
        Some(Ok(())) if f.upperdir => "the mount service makes read-only mounts only".into(),
        Some(Ok(())) => "the mount service answers".into(),
        Some(Err(why)) => why.clone(),
        None => "the mount service was not asked".into(),
    }
}

/// The FUSE part of the table: fuse+overlay or standalone, or why neither.
fn decide_fuse(choice: FuseChoice, f: &Facts, privilege: Privilege) -> Result<Decision, NoMode> {
    let kernel_ok = privilege.initial_admin();
    let ok = |mode, why: &str| {
        Ok(Decision {
            mode,
            why: why.to_string(),
            privilege,
            fallback: None,
        })
    };
    if !f.dev_fuse {
        return Err(NoMode(
            "/dev/fuse can't be opened for reading and writing: load the fuse module \
             (modprobe fuse) and make it usable (chmod 0666 /dev/fuse, as the fuse3 package does)"
                .into(),
        ));
    }
    if choice == FuseChoice::Standalone {
        if !f.cap_sys_admin && f.fusermount3.is_none() {
            return Err(NoMode(
                "--fuse=standalone without CAP_SYS_ADMIN needs fusermount3, and it is not on \
                 PATH: install fuse3 (apt-get install fuse3)"
                    .into(),
            ));
        }
        if f.upperdir {
            return Err(NoMode(
                "--upperdir needs an overlay; standalone FUSE mounts are read-only".into(),
            ));
        }
        return ok(
            MountMode::Fuse,
            "--fuse=standalone: the cfs FUSE server serves metadata and contents",
        );
    }
    let overlay = match &f.userxattr_overlay {
        Some(Ok(())) if f.cap_sys_admin => Ok(()),
        Some(Err(why)) => Err(format!(
            "the kernel refused an overlay with userxattr: {why}"
        )),
        _ => Err(
            "no CAP_SYS_ADMIN to mount an overlay (run in a user namespace: unshare -Urm)"
                .to_string(),
        ),
    };
    match overlay {
        Ok(()) => ok(
            MountMode::FuseOverlay,
            if kernel_ok {
                "--fuse=yes: FUSE for metadata under overlayfs (userxattr), contents read by the kernel"
            } else {
                "CAP_SYS_ADMIN in a user namespace and overlayfs takes userxattr with a data-only \
                 lower: FUSE for metadata, overlayfs reads contents"
            },
        ),
        Err(why) if f.upperdir => Err(NoMode(format!(
            "--upperdir needs an overlay, and {why}; standalone FUSE mounts are read-only"
        ))),
        Err(why) => {
            if !f.cap_sys_admin && f.fusermount3.is_none() {
                return Err(NoMode(format!(
                    "standalone FUSE needs fusermount3 to mount without privilege ({why}), and it \
                     is not on PATH: install fuse3 (apt-get install fuse3)"
                )));
            }
            ok(
                MountMode::Fuse,
                &format!("standalone FUSE serves metadata and contents: {why}"),
            )
        }
    }
}

impl Facts {
    /// Reads the facts from this process and system. The overlay probe (a
    /// throwaway, never attached mount in a temporary directory) runs only
    /// with `CAP_SYS_ADMIN`, and only when its answer can matter.
    pub fn probe(choice: FuseChoice, upperdir: bool) -> Facts {
        let Privilege {
            cap_sys_admin,
            initial_userns,
        } = Privilege::probe();
        let want_overlay = cap_sys_admin
            && choice != FuseChoice::Standalone
            && !(choice != FuseChoice::Yes && initial_userns);
        let want_service = !(cap_sys_admin && initial_userns)
            && matches!(choice, FuseChoice::Auto | FuseChoice::No)
            && !upperdir;
        Facts {
            cap_sys_admin,
            initial_userns,
            userxattr_overlay: want_overlay.then(probe_userxattr_overlay),
            dev_fuse: rustix::fs::access(
                "/dev/fuse",
                rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
            )
            .is_ok(),
            fusermount3: find_in_path("fusermount3"),
            upperdir,
            service: want_service.then(crate::service::probe),
        }
    }
}

/// `PROC_USER_INIT_INO` (`include/linux/proc_ns.h`): the inode number of the
/// initial user namespace's nsfs file.
pub const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;

/// True when this process is in the initial user namespace (see the module
/// doc); also what picks the default repository (root of a user namespace is
/// not the machine's root).
pub fn in_initial_userns() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| m.ino() == PROC_USER_INIT_INO)
}

/// True when `CAP_SYS_ADMIN` (bit 21) is in `CapEff` of `/proc/self/status`.
fn has_cap_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0)
    })
}

/// `name` in a `PATH` directory (`/usr/bin:/bin` when `PATH` is unset).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Mounts (detached, then dropped) an overlay with `userxattr`, one empty
/// lower and one empty data-only lower in a temporary directory: the cheapest
/// question whether fuse+overlay can work here.
pub fn probe_userxattr_overlay() -> Result<(), String> {
    use crate::options::Param;
    use crate::sys::FsContext;
    let dir = tempfile::Builder::new()
        .prefix(".cfs-probe-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let (lower, data) = (dir.path().join("l"), dir.path().join("d"));
    for d in [&lower, &data] {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let ctx = FsContext::open("overlay").map_err(|e| e.to_string())?;
    for p in [
        Param::Str("source", "cfs-probe".into()),
        Param::Flag("userxattr"),
        Param::Str("lowerdir+", lower.into_os_string()),
        Param::Str("datadir+", data.into_os_string()),
    ] {
        ctx.set(&p).map_err(|e| e.to_string())?;
    }
    ctx.create_and_mount(rustix::mount::MountAttrFlags::MOUNT_ATTR_RDONLY)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use FuseChoice::*;
    use MountMode::*;

    const ROOT: Facts = Facts {
        cap_sys_admin: true,
        initial_userns: true,
        userxattr_overlay: None,
        dev_fuse: true,
        fusermount3: None,
        upperdir: false,
        service: None,
    };

    fn facts(cap: bool, init: bool, overlay: Option<bool>, fusermount: bool, upper: bool) -> Facts {
        Facts {
            cap_sys_admin: cap,
            initial_userns: init,
            userxattr_overlay: overlay.map(|ok| if ok { Ok(()) } else { Err("EINVAL".into()) }),
            fusermount3: fusermount.then(|| "/usr/bin/fusermount3".into()),
            upperdir: upper,
            ..ROOT
        }
    }

    /// (choice, cap, initial ns, overlay probe, fusermount3, upperdir) -> mode or error
    type Row = (
        FuseChoice,
        bool,
        bool,
        Option<bool>,
        bool,
        bool,
        Option<MountMode>,
    );

    #[test]
    fn decision_table() {
        // (choice, cap, initial ns, overlay probe, fusermount3, upperdir) -> mode or error
        let table: &[Row] = &[
            (Auto, true, true, None, true, false, Some(Kernel)),
            (Auto, true, true, None, true, true, Some(Kernel)),
            (No, true, true, None, false, false, Some(Kernel)),
            (Yes, true, true, Some(true), true, false, Some(FuseOverlay)),
            (Yes, true, true, Some(false), true, false, Some(Fuse)),
            (Yes, true, true, Some(false), true, true, None),
            // A user namespace: CAP_SYS_ADMIN there only.
            (
                Auto,
                true,
                false,
                Some(true),
                false,
                false,
                Some(FuseOverlay),
            ),
            (
                Auto,
                true,
                false,
                Some(true),
                false,
                true,
                Some(FuseOverlay),
            ),
            (Auto, true, false, Some(false), false, false, Some(Fuse)),
            (Auto, true, false, Some(false), false, true, None),
            (No, true, false, Some(true), true, false, None),
            // A plain user.
            (Auto, false, true, None, true, false, Some(Fuse)),
            (Yes, false, true, None, true, false, Some(Fuse)),
            (Auto, false, true, None, false, false, None),
            (Auto, false, true, None, true, true, None),
            (No, false, true, None, true, false, None),
            // Standalone whenever FUSE works.
            (Standalone, true, true, None, false, false, Some(Fuse)),
            (Standalone, false, true, None, true, false, Some(Fuse)),
            (Standalone, false, true, None, false, false, None),
            (Standalone, true, false, Some(true), false, true, None),
            // An identity-mapped child namespace is not the initial one.
            (
                Auto,
                true,
                false,
                Some(true),
                true,
                false,
                Some(FuseOverlay),
            ),
        ];
        for &(choice, cap, init, overlay, fm, upper, want) in table {
            let f = facts(cap, init, overlay, fm, upper);
            let got = decide(choice, &f).map(|d| d.mode).ok();
            assert_eq!(got, want, "{choice:?} {f:?}");
        }
    }

    /// (choice, cap, initial ns, service answers, upperdir) -> mode, fallback
    #[test]
    fn the_service_comes_after_the_kernel_and_before_fuse() {
        type Row = (
            FuseChoice,
            bool,
            bool,
            Option<bool>,
            bool,
            Option<(MountMode, Option<MountMode>)>,
        );
        let table: &[Row] = &[
            // A plain user: the service, falling back to standalone FUSE.
            (
                Auto,
                false,
                true,
                Some(true),
                false,
                Some((Service, Some(Fuse))),
            ),
            (Auto, false, true, Some(false), false, Some((Fuse, None))),
            // Root of a user namespace: the service, else fuse+overlay.
            (
                Auto,
                true,
                false,
                Some(true),
                false,
                Some((Service, Some(FuseOverlay))),
            ),
            (
                Auto,
                true,
                false,
                Some(false),
                false,
                Some((FuseOverlay, None)),
            ),
            // Writable mounts are never the service's.
            (
                Auto,
                true,
                false,
                Some(true),
                true,
                Some((FuseOverlay, None)),
            ),
            // Root keeps its own kernel mount.
            (Auto, true, true, Some(true), false, Some((Kernel, None))),
            // --fuse=no: kernel, else the service with nothing to fall back to.
            (No, false, true, Some(true), false, Some((Service, None))),
            (No, false, true, Some(false), false, None),
            (No, true, false, Some(true), false, Some((Service, None))),
            // --fuse=yes and standalone never ask the service.
            (Yes, false, true, Some(true), false, Some((Fuse, None))),
            (
                Standalone,
                false,
                true,
                Some(true),
                false,
                Some((Fuse, None)),
            ),
        ];
        for &(choice, cap, init, service, upper, want) in table {
            let f = Facts {
                service: service.map(|ok| if ok { Ok(()) } else { Err("no socket".into()) }),
                ..facts(cap, init, Some(true), true, upper)
            };
            let got = decide(choice, &f)
                .map(|d| (d.mode, d.fallback.map(|b| b.mode)))
                .ok();
            assert_eq!(got, want, "{choice:?} {f:?}");
        }
        // --explain says why the service was not used.
        let f = Facts {
            service: Some(Err("no mount service at /run/cfs/mount.sock".into())),
            ..facts(false, true, None, true, false)
        };
        let d = decide(Auto, &f).unwrap();
        assert!(d.why.contains("no mount service at"), "{}", d.why);
        let e = decide(No, &f).unwrap_err();
        assert!(e.0.contains("no mount service at"), "{e}");
    }

    #[test]
    fn errors_say_what_to_do() {
        let no_fusermount = decide(Auto, &facts(false, true, None, false, false)).unwrap_err();
        assert!(no_fusermount.0.contains("install fuse3"), "{no_fusermount}");
        let no_dev = decide(
            Auto,
            &Facts {
                dev_fuse: false,
                ..facts(false, true, None, true, false)
            },
        )
        .unwrap_err();
        assert!(no_dev.0.contains("chmod 0666 /dev/fuse"), "{no_dev}");
        let no_kernel = decide(No, &facts(false, true, None, true, false)).unwrap_err();
        assert!(no_kernel.0.contains("--fuse=auto"), "{no_kernel}");
        let upper = decide(Auto, &facts(false, true, None, true, true)).unwrap_err();
        assert!(upper.0.contains("unshare -Urm"), "{upper}");
    }

    #[test]
    fn this_process_is_probed_without_panicking() {
        let f = Facts::probe(Auto, false);
        // Root in the initial namespace never needs the probe under auto.
        if f.cap_sys_admin && f.initial_userns {
            assert_eq!(f.userxattr_overlay, None);
        }
    }
}
