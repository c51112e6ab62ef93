//! The thin syscall layer, and every `unsafe` of the crate: filesystem
//! contexts (`fsopen`/`fsconfig`/`fsmount`, see fsopen(2)), `move_mount(2)`,
//! loop devices (loop(4)), `FS_IOC_MEASURE_VERITY` (fsverity(7)), handing
//! fds to a server across `exec`, taking socket-activated fds (sd_listen_fds(3)), and for the mount
//! service: the peer of a socket (`SO_PEERPIDFD`, `SO_PEERGROUPS`, socket(7)),
//! its namespaces (`PIDFD_GET_MNT_NAMESPACE`, `PIDFD_GET_USER_NAMESPACE`,
//! `NS_GET_USERNS`, `NS_GET_PARENT`, `NS_GET_OWNER_UID`, `NS_GET_MNTNS_ID`,
//! ioctl_nsfs(2)), idmapped mounts (mount_setattr(2)),
//! and a thread entering a mount namespace as another user (setns(2),
//! capabilities(7)). Nothing here decides anything; the callers do, from
//! what `options.rs` builds.
//!
//! **Invariant** of every `unsafe` block here: a raw fd number is used only
//! while an [`OwnedFd`] of this process owns it (or, across `exec`, while the
//! `LISTEN_FDS` or [`HANDED_FDS_VAR`] contract says the parent opened it for
//! us; or once the kernel
//! returned it as new from an ioctl or `getsockopt`, when it becomes owned at
//! once), and every ioctl, `getsockopt` or `mount_setattr` argument is a
//! `repr(C)` value or buffer laid out as the uapi expects, living across the
//! call.

use crate::options::Param;
use cfs_format::Digest;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{self as m, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A failed step of building a mount, with what the kernel logged about it.
#[derive(Debug)]
pub struct KernelError {
    /// The errno.
    pub errno: Errno,
    /// The step (`fsconfig erofs source=…`, `fsmount overlay`, …).
    pub step: String,
    /// Messages the filesystem context logged (`e overlay: …`), then those
    /// the filesystem wrote to the kernel log (`overlayfs: …`) during the
    /// attempt, oldest first.
    pub log: Vec<String>,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, std::io::Error::from(self.errno))?;
        for line in &self.log {
            write!(f, " [kernel: {line}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// A filesystem context being configured (`fsopen`), closed on drop.
///
/// Why a step failed is told two ways: messages the filesystem logs on the
/// context (`invalfc()`, mostly about parameters), read from the context's
/// fd; and what it writes to the kernel log while creating the superblock
/// (`pr_err()` in overlayfs' and erofs' `fill_super`: "workdir and upperdir
/// must reside under the same mount"), read from `/dev/kmsg` where this
/// process may (root): positioned at its end when the context is opened,
/// only this filesystem's records written since are kept.
pub struct FsContext {
    fd: OwnedFd,
    fstype: &'static str,
    kmsg: Option<OwnedFd>,
}

/// The kernel log's prefix for a filesystem's `pr_*` messages.
fn kmsg_prefix(fstype: &str) -> &str {
    match fstype {
        "overlay" => "overlayfs",
        other => other,
    }
}

impl FsContext {
    /// `fsopen(fstype, FSOPEN_CLOEXEC)`.
    pub fn open(fstype: &'static str) -> Result<FsContext, KernelError> {
        let fd = m::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|errno| KernelError {
            errno,
            step: format!("fsopen {fstype}"),
            log: Vec::new(),
        })?;
        let kmsg = rustix::fs::open(
            "/dev/kmsg",
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .filter(|k| rustix::fs::seek(k, rustix::fs::SeekFrom::End(0)).is_ok());
        Ok(FsContext { fd, fstype, kmsg })
    }

    /// Reads (and so clears) the messages the kernel logged on this context,
    /// then this filesystem's kernel log records since the context was opened.
    fn drain_log(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = rustix::io::read(&self.fd, &mut buf) {
            if n == 0 {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
        }
        if let Some(kmsg) = &self.kmsg {
            let mut record = [0u8; 2048];
            let prefix = kmsg_prefix(self.fstype);
            // One record per read; EAGAIN at the end, EPIPE for records
            // overwritten meanwhile (skipped). Bounded for a busy log.
            for _ in 0..256 {
                match rustix::io::read(kmsg, &mut record) {
                    Ok(0) | Err(Errno::AGAIN) => break,
                    Ok(n) => {
                        if let Some(text) = kmsg_text(&record[..n]) {
                            if text.starts_with(prefix) {
                                out.push(text);
                            }
                        }
                    }
                    Err(Errno::PIPE | Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
        out
    }

    fn fail(&self, errno: Errno, step: String) -> KernelError {
        KernelError {
            errno,
            step: format!("{} {}", step, self.fstype),
            log: self.drain_log(),
        }
    }

    /// One `fsconfig` call.
    pub fn set(&self, p: &Param) -> Result<(), KernelError> {
        match p {
            Param::Flag(k) => m::fsconfig_set_flag(&self.fd, *k)
                .map_err(|e| self.fail(e, format!("fsconfig {k} on"))),
            Param::Str(k, v) => m::fsconfig_set_string(&self.fd, *k, v.as_os_str())
                .map_err(|e| self.fail(e, format!("fsconfig {k}={} on", v.to_string_lossy()))),
        }
    }

    /// `FSCONFIG_SET_FD key=fd` (overlayfs layers, Linux 6.13+): the layer
    /// is the open directory itself, no path is resolved.
    pub fn set_fd(&self, key: &'static str, fd: BorrowedFd<'_>) -> Result<(), KernelError> {
        m::fsconfig_set_fd(&self.fd, key, fd)
            .map_err(|e| self.fail(e, format!("fsconfig {key}=<fd> on")))
    }

    /// `FSCONFIG_CMD_CREATE` then `fsmount`: a detached mount, held by the fd.
    pub fn create_and_mount(&self, attrs: MountAttrFlags) -> Result<OwnedFd, KernelError> {
        m::fsconfig_create(&self.fd).map_err(|e| self.fail(e, "create".into()))?;
        m::fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.fail(e, "fsmount".into()))
    }
}

/// The message of one `/dev/kmsg` record (`PRI,SEQ,USEC,FLAGS;MESSAGE\n`
/// plus continuation lines), see Documentation/ABI/testing/dev-kmsg.
fn kmsg_text(record: &[u8]) -> Option<String> {
    let start = record.iter().position(|&b| b == b';')? + 1;
    let line = record[start..].split(|&b| b == b'\n').next()?;
    Some(String::from_utf8_lossy(line).trim_end().to_string())
}

/// The path through which a process reaches what `fd` refers to, also for a
/// detached mount: `/proc/self/fd/N`.
pub fn fd_path(fd: BorrowedFd<'_>) -> OsString {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// Attaches the detached mount `mnt` at `target` (`move_mount(2)`).
pub fn attach(mnt: BorrowedFd<'_>, target: &Path) -> Result<(), KernelError> {
    m::move_mount(
        mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|errno| KernelError {
        errno,
        step: format!("move_mount to {}", target.display()),
        log: Vec::new(),
    })
}

/// Attaches the detached mount `mnt` on the directory `target` is open on
/// (`move_mount(2)` with both paths empty): no path is looked up.
pub fn attach_to_fd(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), KernelError> {
    m::move_mount(
        mnt,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|errno| KernelError {
        errno,
        step: "move_mount onto the mount point".into(),
        log: Vec::new(),
    })
}

/// An ioctl that takes no argument and returns an int as the syscall's
/// result: a new fd (`PIDFD_GET_*`, `NS_GET_USERNS`) or a number
/// (`LOOP_CTL_GET_FREE`, which rustix's `NoArg` would drop).
struct ReturnsInt<const OPCODE: rustix::ioctl::Opcode>;

// SAFETY: these ioctls take no argument (as_ptr's null is never read) and
// return an int as the syscall's result, which `output_from_ptr` hands back.
#[allow(unsafe_code)]
unsafe impl<const OPCODE: rustix::ioctl::Opcode> rustix::ioctl::Ioctl for ReturnsInt<OPCODE> {
    type Output = rustix::ioctl::IoctlOutput;
    const IS_MUTATING: bool = false;
    fn opcode(&self) -> rustix::ioctl::Opcode {
        OPCODE
    }
    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        core::ptr::null_mut()
    }
    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _: *mut core::ffi::c_void,
    ) -> rustix::io::Result<Self::Output> {
        Ok(out)
    }
}

/// A loop device bound to an image, read-only with autoclear: it goes away
/// when its last user (this fd, then the erofs superblock) lets go.
pub struct LoopDevice {
    /// The open device; dropping it before a mount uses it frees the device.
    pub fd: OwnedFd,
}

/// Binds `image` (an open file) to a free loop device, read-only, direct I/O
/// off (its reads go through the image file's page cache, with readahead),
/// 4 KiB blocks (the composefs block size), autoclear. Another process may
/// take the free device between `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE`
/// (EBUSY): then it asks for another, a few times.
pub fn loop_attach(image: BorrowedFd<'_>, name: &Path) -> Result<LoopDevice, KernelError> {
    const TRIES: usize = 8;
    let mut tries = 1;
    loop {
        match loop_attach_once(image, name) {
            Err(e) if e.errno == Errno::BUSY && tries < TRIES => tries += 1,
            r => return r,
        }
    }
}

#[allow(unsafe_code)]
fn loop_attach_once(image: BorrowedFd<'_>, name: &Path) -> Result<LoopDevice, KernelError> {
    use linux_raw_sys::loop_device as ld;
    use std::os::fd::AsRawFd;
    let err = |errno, step: &str| KernelError {
        errno,
        step: step.to_string(),
        log: Vec::new(),
    };
    let ctl = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e, "open /dev/loop-control"))?;
    // SAFETY: ReturnsInt matches LOOP_CTL_GET_FREE's contract (see its impl),
    // and ctl is an open loop-control device.
    let n = unsafe {
        rustix::ioctl::ioctl(
            &ctl,
            ReturnsInt::<{ linux_raw_sys::loop_device::LOOP_CTL_GET_FREE as _ }>,
        )
    }
    .map_err(|e| err(e, "ioctl LOOP_CTL_GET_FREE"))?;
    let path = PathBuf::from(format!("/dev/loop{n}"));
    let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| err(e, &format!("open {}", path.display())))?;
    let mut info = ld::loop_info64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: ld::LO_FLAGS_READ_ONLY as u32 | ld::LO_FLAGS_AUTOCLEAR as u32,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_os_str().as_bytes();
    let len = bytes.len().min(info.lo_file_name.len() - 1);
    info.lo_file_name[..len].copy_from_slice(&bytes[..len]);
    let config = ld::loop_config {
        fd: image.as_raw_fd() as u32,
        block_size: 4096,
        info,
        __reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` (linux-raw-sys's
    // binding of the uapi struct) and writes nothing back; Setter passes a
    // pointer to `config`, which outlives the call, and fd is a loop device.
    unsafe {
        let op = rustix::ioctl::Setter::<{ ld::LOOP_CONFIGURE as rustix::ioctl::Opcode }, _>::new(
            config,
        );
        rustix::ioctl::ioctl(&fd, op)
    }
    .map_err(|e| err(e, &format!("ioctl LOOP_CONFIGURE {}", path.display())))?;
    Ok(LoopDevice { fd })
}

/// `struct fsverity_digest` with room for a sha512 digest.
#[repr(C)]
struct FsverityDigest {
    alg: u16,
    size: u16,
    digest: [u8; 64],
}

/// What `FS_IOC_MEASURE_VERITY` said about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// fs-verity is on: the file's sha256 digest.
    Sha256(Digest),
    /// fs-verity is on with another algorithm.
    OtherAlgorithm,
    /// The filesystem supports fs-verity, this file doesn't have it (ENODATA).
    NotEnabled,
    /// The kernel or filesystem has no fs-verity (ENOTTY, EOPNOTSUPP).
    Unsupported,
}

/// Asks the kernel for a file's fs-verity digest.
#[allow(unsafe_code)]
pub fn measure_verity(file: BorrowedFd<'_>) -> rustix::io::Result<Measured> {
    let mut d = FsverityDigest {
        alg: 0,
        size: 64,
        digest: [0; 64],
    };
    // SAFETY: FS_IOC_MEASURE_VERITY reads `size` and writes alg, size and at
    // most `size` (64) digest bytes into the struct: all inside `d`, which is
    // repr(C) like the uapi struct and lives across the call.
    let r = unsafe {
        let op = rustix::ioctl::Updater::<
            { linux_raw_sys::ioctl::FS_IOC_MEASURE_VERITY as rustix::ioctl::Opcode },
            _,
        >::new(&mut d);
        rustix::ioctl::ioctl(file.as_fd(), op)
    };
    match r {
        Ok(()) if d.alg == 1 && d.size == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(&d.digest[..32]);
            Ok(Measured::Sha256(Digest(out)))
        }
        Ok(()) => Ok(Measured::OtherAlgorithm),
        Err(Errno::NODATA) => Ok(Measured::NotEnabled),
        Err(Errno::NOTTY | Errno::OPNOTSUPP) => Ok(Measured::Unsupported),
        Err(e) => Err(e),
    }
}

/// `LISTEN_FDS`-numbered fds start here (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The variable that tells a re-executed `cfs` its handed-over fds:
/// `NAME=FD` pairs, `:`-joined, in order (`fuse=7:control=8:…`).
pub const HANDED_FDS_VAR: &str = "CFS_HANDED_FDS";

/// Makes `command` start its program with `fds` open (without
/// `FD_CLOEXEC`) at the numbers they have here, named in
/// [`HANDED_FDS_VAR`] for [`take_handed_over`], and no other fd above
/// stdio (every other fd this process has is closed at exec: an inherited
/// pipe's reader would wait, and a lock stay held, as long as the server).
/// Returns the fds, which must stay open until the command is spawned.
///
/// The fds keep their numbers: moving them to fixed ones (3, 4, … as
/// socket activation does) with `dup2` between fork and exec could close
/// the close-on-exec pipe through which the standard library reports a
/// failed `exec`, which takes the lowest free numbers when `spawn` runs;
/// the child then wrote that report into a handed-over fd and `spawn` said
/// it had succeeded.
#[allow(unsafe_code)]
pub fn hand_over_at_exec(
    command: &mut std::process::Command,
    fds: Vec<(&'static str, OwnedFd)>,
) -> std::io::Result<Vec<OwnedFd>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw: Vec<i32> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let named: Vec<String> = fds
        .iter()
        .map(|(name, fd)| format!("{name}={}", fd.as_raw_fd()))
        .collect();
    command.env(HANDED_FDS_VAR, named.join(":"));
    // SAFETY: the closure runs in the forked child before exec and only calls
    // close_range(2) and fcntl(2), plain system calls, async-signal-safe,
    // allocating nothing (`raw` was allocated before the fork and is only
    // read). close_range with CLOSE_RANGE_CLOEXEC only sets FD_CLOEXEC on
    // every fd above stdio; fcntl then clears it on fds this process owns
    // (returned to the caller, who keeps them open until after spawn), so
    // each is the fd named in the environment. No fd is closed or
    // renumbered before exec, so the standard library's exec-error pipe
    // (close-on-exec already) still reports a failed exec.
    unsafe {
        command.pre_exec(move || {
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &raw {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(fds.into_iter().map(|(_, fd)| fd).collect())
}

/// The `NAME=FD` pairs of [`HANDED_FDS_VAR`]'s value, if they are exactly
/// `names`, in order, each fd above stderr and each once.
fn parse_handed(value: &str, names: &[&str]) -> Option<Vec<i32>> {
    let pairs: Vec<&str> = if value.is_empty() {
        Vec::new()
    } else {
        value.split(':').collect()
    };
    if pairs.len() != names.len() {
        return None;
    }
    let mut fds = Vec::with_capacity(names.len());
    for (pair, want) in pairs.iter().zip(names) {
        let (name, fd) = pair.split_once('=')?;
        let fd: i32 = fd.parse().ok().filter(|&fd| fd > 2)?;
        if name != *want || fds.contains(&fd) {
            return None;
        }
        fds.push(fd);
    }
    Some(fds)
}

/// The fds systemd passed by socket activation (sd_listen_fds(3)), with
/// their names (`LISTEN_FDNAMES`, or `unknown`): `None` when there are none
/// for this process (`LISTEN_PID` must be this process, as systemd sets
/// it). The variables are removed, so this succeeds once per process.
#[allow(unsafe_code)]
pub fn take_socket_activation() -> Result<Option<Vec<(String, OwnedFd)>>, String> {
    use std::os::fd::FromRawFd;
    let (Ok(pid), Ok(count)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid != std::process::id().to_string() {
        return Ok(None);
    }
    let count: i32 = count
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS={count} is not a number of fds"))?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for k in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"] {
        std::env::remove_var(k);
    }
    let mut names = names.split(':');
    let mut out = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count {
        // SAFETY: only borrowed for this one fcntl, which fails harmlessly
        // (EBADF) on a closed fd.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("socket-activation fd {fd}: {e}"))?;
        // SAFETY: LISTEN_PID names this process and LISTEN_FDS these fds,
        // which systemd opened for it (and fcntl just proved open). The
        // service calls this first, still one thread: the fds were open
        // across exec, so nothing it opened since has their numbers, and
        // with the variables gone nothing else takes ownership of them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
        out.push((name.to_string(), owned));
    }
    Ok(Some(out))
}

/// Takes the fds [`hand_over_at_exec`] handed this process, named
/// `names` in that order ([`HANDED_FDS_VAR`], removed, so this succeeds
/// once per process). Runs first in `cfs __serve`, while it is one thread:
/// the fds were open across exec, so nothing it opened since has their
/// numbers, and no other thread reads the environment.
#[allow(unsafe_code)]
pub fn take_handed_over(names: &[&str]) -> Result<Vec<OwnedFd>, String> {
    use std::os::fd::FromRawFd;
    let value = std::env::var(HANDED_FDS_VAR).unwrap_or_default();
    let Some(fds) = parse_handed(&value, names) else {
        return Err(format!(
            "no fds handed over ({HANDED_FDS_VAR}={value:?}, wanted {}): this command is run \
             by `cfs mount`",
            names.join(":")
        ));
    };
    std::env::remove_var(HANDED_FDS_VAR);
    for &fd in &fds {
        // SAFETY: only borrowed for this one fcntl, which fails (EBADF) on
        // a closed fd and changes nothing else.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(borrowed, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("handed-over fd {fd}: {e}"))?;
    }
    // SAFETY: the variable (checked, then removed so this runs once) says
    // the parent left these fds open for this process, each number once,
    // and fcntl just proved each open: open since exec, so nothing this
    // process opened has their numbers, and it closes no fd it does not
    // own; owning them closes each exactly once.
    Ok(fds
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

// ---- The mount service: who the peer is, its namespaces, acting there. ----

/// `PIDFD_GET_MNT_NAMESPACE` (`_IO(0xFF, 3)`, Linux 6.11, `linux/pidfd.h`).
const PIDFD_GET_MNT_NAMESPACE: rustix::ioctl::Opcode = 0xFF03;
/// `PIDFD_GET_USER_NAMESPACE` (`_IO(0xFF, 9)`, Linux 6.11, `linux/pidfd.h`).
const PIDFD_GET_USER_NAMESPACE: rustix::ioctl::Opcode = 0xFF09;
/// `NS_GET_USERNS` (`_IO(0xb7, 0x1)`, `linux/nsfs.h`): the owning user namespace.
const NS_GET_USERNS: rustix::ioctl::Opcode = 0xb701;
/// `NS_GET_PARENT` (`_IO(0xb7, 0x2)`): the parent of a user namespace.
const NS_GET_PARENT: rustix::ioctl::Opcode = 0xb702;
/// `NS_GET_OWNER_UID` (`_IO(0xb7, 0x4)`): the uid that created a user
/// namespace, as the caller's namespace maps it, written through the
/// argument (a `uid_t *`, though the opcode encodes no argument).
const NS_GET_OWNER_UID: rustix::ioctl::Opcode = 0xb704;
/// `NS_GET_MNTNS_ID` (`_IOR(0xb7, 0x5, __u64)`, Linux 6.8).
const NS_GET_MNTNS_ID: rustix::ioctl::Opcode = 0x8008_b705;

#[allow(unsafe_code)]
fn ioctl_fd<const OPCODE: rustix::ioctl::Opcode>(
    fd: BorrowedFd<'_>,
) -> rustix::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: ReturnsInt matches these ioctls' contract (see its impl).
    let raw = unsafe { rustix::ioctl::ioctl(fd, ReturnsInt::<OPCODE>) }?;
    // SAFETY: on success the kernel returned a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The mount namespace of the process `pidfd` refers to, as an nsfs fd.
pub fn pidfd_mount_namespace(pidfd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    ioctl_fd::<PIDFD_GET_MNT_NAMESPACE>(pidfd)
}

/// The user namespace owning the namespace `ns` (an nsfs fd).
pub fn namespace_owner(ns: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    ioctl_fd::<NS_GET_USERNS>(ns)
}

/// The user namespace of the process `pidfd` refers to, as an nsfs fd.
pub fn pidfd_user_namespace(pidfd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    ioctl_fd::<PIDFD_GET_USER_NAMESPACE>(pidfd)
}

/// The parent of the user namespace `userns` (`EPERM` for the initial one,
/// or one outside this process's namespace).
pub fn user_namespace_parent(userns: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    ioctl_fd::<NS_GET_PARENT>(userns)
}

/// The uid that created the user namespace `userns`, in this process's
/// user namespace.
#[allow(unsafe_code)]
pub fn user_namespace_owner_uid(userns: BorrowedFd<'_>) -> rustix::io::Result<u32> {
    // SAFETY: NS_GET_OWNER_UID writes one uid_t (a u32) through the
    // pointer Getter passes, to a value Getter owns for the call.
    unsafe {
        rustix::ioctl::ioctl(
            userns,
            rustix::ioctl::Getter::<NS_GET_OWNER_UID, u32>::new(),
        )
    }
}

/// The 64-bit id of the mount namespace `ns` (what `statmount` and
/// `/proc/PID/mountinfo`-less tools name it by).
#[allow(unsafe_code)]
pub fn mount_namespace_id(ns: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    // SAFETY: NS_GET_MNTNS_ID writes one u64 through the pointer Getter
    // passes, to a value Getter owns for the call.
    unsafe { rustix::ioctl::ioctl(ns, rustix::ioctl::Getter::<NS_GET_MNTNS_ID, u64>::new()) }
}

/// Reads an `int`-sized or array socket option into `buf`; the length written.
#[allow(unsafe_code)]
fn getsockopt_raw(sock: BorrowedFd<'_>, opt: i32, buf: &mut [u8]) -> rustix::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and outlives the call; the
    // kernel writes at most `len` bytes and stores the length it wrote.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
    }
    Ok(len as usize)
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected.
#[allow(unsafe_code)]
pub fn peer_pidfd(sock: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 4];
    let n = getsockopt_raw(sock, linux_raw_sys::net::SO_PEERPIDFD as i32, &mut buf)?;
    let fd = i32::from_ne_bytes(buf);
    if n != 4 || fd < 0 {
        return Err(Errno::INVAL);
    }
    // SAFETY: SO_PEERPIDFD installs a new fd in this process and returns
    // its number: nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SO_PEERGROUPS`: the supplementary groups the peer had when it connected.
pub fn peer_groups(sock: BorrowedFd<'_>) -> rustix::io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; most processes have a handful.
    let mut buf = vec![0u8; 4 * 64];
    loop {
        match getsockopt_raw(sock, linux_raw_sys::net::SO_PEERGROUPS as i32, &mut buf) {
            Ok(n) => {
                return Ok(buf[..n]
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            Err(Errno::RANGE) if buf.len() < 4 * 65536 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// `struct mount_attr` (`linux/mount.h`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the detached mount `mnt` idmapped through the user namespace
/// `userns` (`mount_setattr(2)`, `MOUNT_ATTR_IDMAP`): a file whose owner is
/// `N` on disk appears owned by whoever `N` is in that namespace.
#[allow(unsafe_code)]
pub fn set_idmap(mnt: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> Result<(), KernelError> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: u64::from(linux_raw_sys::general::MOUNT_ATTR_IDMAP),
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size` bytes of `attr`, a repr(C) copy of
    // `struct mount_attr` living across the call; the path is a valid empty
    // C string and `mnt` an open fd (AT_EMPTY_PATH acts on it).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
        return Err(KernelError {
            errno,
            step: "mount_setattr MOUNT_ATTR_IDMAP".into(),
            log: Vec::new(),
        });
    }
    Ok(())
}

/// Gives the calling thread its own filesystem context (root, cwd) and
/// moves it into the mount namespace `ns`: `setns(CLONE_NEWNS)` refuses a
/// thread whose `fs_struct` is shared with its siblings, which
/// `unshare(CLONE_FS)` ends. Only this thread changes; call it on a thread
/// that ends once done there.
#[allow(unsafe_code)]
pub fn enter_mount_namespace(ns: BorrowedFd<'_>) -> rustix::io::Result<()> {
    use rustix::thread::{LinkNameSpaceType, UnshareFlags};
    // SAFETY: unshare_unsafe's hazard is CLONE_FILES (fds of one table seen
    // from another); CLONE_FS unshares only root, cwd and umask.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS) }?;
    rustix::thread::move_into_link_name_space(ns, Some(LinkNameSpaceType::Mount))
}

/// Makes the calling thread (only it: raw per-thread syscalls, not libc's
/// process-wide wrappers) the user `uid`:`gid` with `groups`, keeping
/// `CAP_SYS_ADMIN` alone, effective and permitted: enough to create and
/// attach a mount, nothing to bypass file permissions (no `CAP_DAC_*`,
/// `CAP_FOWNER`, `CAP_SETUID`). Irreversible for the thread.
pub fn become_user_with_sys_admin(uid: u32, gid: u32, groups: &[u32]) -> rustix::io::Result<()> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{self as t, CapabilitySet, CapabilitySets};
    t::set_keep_capabilities(true)?;
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    t::set_thread_groups(&groups)?;
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    t::set_thread_res_gid(g, g, g)?;
    t::set_thread_res_uid(u, u, u)?;
    let keep = CapabilitySet::SYS_ADMIN;
    t::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    t::set_keep_capabilities(false)?;
    let now = t::capabilities(None)?;
    if now.effective != keep || now.permitted != keep {
        return Err(Errno::PERM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn handed_fds_are_named_in_order_each_once() {
        let names = ["fuse", "control"];
        assert_eq!(parse_handed("fuse=7:control=9", &names), Some(vec![7, 9]));
        for bad in [
            "",
            "fuse=7",
            "control=9:fuse=7",
            "fuse=7:control=7",
            "fuse=2:control=9",
            "fuse=x:control=9",
            "fuse=7:control=9:image=10",
            "fuse7:control=9",
        ] {
            assert_eq!(parse_handed(bad, &names), None, "{bad}");
        }
        assert_eq!(parse_handed("", &[]), Some(vec![]));
    }

    /// The handed fds reach the program open at the numbers named, and an
    /// exec that fails is still reported as such (the standard library's
    /// exec-error pipe is never closed on the way).
    #[test]
    fn handed_fds_arrive_and_a_failed_exec_is_an_error() {
        let handed = || vec![("fuse", dev_null()), ("control", dev_null())];
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(
            "for p in $(echo \"$CFS_HANDED_FDS\" | tr : ' '); do \
               [ -e /proc/self/fd/${p#*=} ] && echo ${p%=*}; done",
        );
        let keep = hand_over_at_exec(&mut command, handed()).unwrap();
        let out = command.output().unwrap();
        drop(keep);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fuse\ncontrol\n");
        for _ in 0..20 {
            let mut command = std::process::Command::new("/nonexistent/cfs-handed-fds-test");
            command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            let keep = hand_over_at_exec(&mut command, handed()).unwrap();
            let e = command.spawn().map(|_| ()).unwrap_err();
            drop(keep);
            assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        }
    }

    #[test]
    fn kmsg_records_and_prefixes() {
        assert_eq!(
            kmsg_text(
                b"3,1234,5678,-;overlayfs: workdir and upperdir must reside under the same mount\n"
            )
            .as_deref(),
            Some("overlayfs: workdir and upperdir must reside under the same mount")
        );
        assert_eq!(
            kmsg_text(
                b"6,1,2,-;erofs (device loop0): cannot find valid superblock\n SUBSYSTEM=block\n"
            )
            .as_deref(),
            Some("erofs (device loop0): cannot find valid superblock")
        );
        assert_eq!(kmsg_text(b"garbage"), None);
        assert_eq!(kmsg_prefix("overlay"), "overlayfs");
        assert_eq!(kmsg_prefix("erofs"), "erofs");
    }

    /// The filesystem context's own log reaches the error (root: fsopen).
    #[test]
    fn a_refused_parameter_carries_the_kernels_reason() {
        let Ok(ctx) = FsContext::open("overlay") else {
            return; // no fsopen here (not root): nothing to check
        };
        let e = ctx.set(&Param::Str("frob", "1".into())).unwrap_err();
        assert!(e.to_string().contains("Unknown parameter 'frob'"), "{e}");
    }
}
