//! Who is asking: whether the process behind a request may see `trusted.*`
//! xattr names.
//!
//! The kernel shows `trusted.*` names only to processes with
//! `CAP_SYS_ADMIN` in the initial user namespace (`capable()`): erofs and
//! overlayfs leave them out of `listxattr` for everyone else, and the VFS
//! refuses everyone else's `getxattr` of them before asking any filesystem.
//! FUSE forwards `listxattr` unfiltered, so a standalone server must filter
//! the list itself to show what the kernel mount shows.
//!
//! The kernel gives the server the requesting thread's pid (as seen in the
//! server's pid namespace; 0 when it is not visible there). The answer is
//! read from `/proc/PID`: its effective capabilities (`CapEff`), and that
//! its user namespace is the initial one (the nsfs inode is
//! `PROC_USER_INIT_INO`; where the server may not look at the caller's
//! namespace, an identity `uid_map` is taken instead). Anything unreadable
//! counts as not capable, so a doubt hides names rather than showing them.
//! A pid reused between the request and the check could only show the
//! *names* to a caller that may not read their values.

use std::os::unix::fs::MetadataExt;

/// `PROC_USER_INIT_INO` (`include/uapi/linux/nsfs.h`).
const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;
/// `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;

/// True when the process `pid` has `CAP_SYS_ADMIN` in the initial user
/// namespace, as far as `/proc` tells (false for pid 0 or anything unreadable).
pub fn may_list_trusted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let proc = format!("/proc/{pid}");
    let cap =
        std::fs::read_to_string(format!("{proc}/status")).is_ok_and(|s| has_cap(&s, CAP_SYS_ADMIN));
    if !cap {
        return false;
    }
    match std::fs::metadata(format!("{proc}/ns/user")) {
        Ok(m) => m.ino() == PROC_USER_INIT_INO,
        Err(_) => {
            std::fs::read_to_string(format!("{proc}/uid_map")).is_ok_and(|m| is_identity_map(&m))
        }
    }
}

/// True when `status` (a `/proc/PID/status`) has capability `bit` in `CapEff`.
fn has_cap(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// True when a `uid_map` maps every id to itself (`0 0 4294967295`).
fn is_identity_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_maps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(has_cap(status, CAP_SYS_ADMIN));
        assert!(!has_cap("CapEff:\t0000000000000000\n", CAP_SYS_ADMIN));
        assert!(!has_cap("CapEff:\t0000000000200000x\n", CAP_SYS_ADMIN));
        assert!(!has_cap("", CAP_SYS_ADMIN));
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
        assert!(!may_list_trusted(0));
    }

    #[test]
    fn this_process_is_judged_like_the_kernel_would() {
        let me = std::process::id();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let initial = std::fs::metadata("/proc/self/ns/user").unwrap().ino() == PROC_USER_INIT_INO;
        assert_eq!(
            may_list_trusted(me),
            initial && has_cap(&status, CAP_SYS_ADMIN)
        );
    }
}
