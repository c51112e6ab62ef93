//! What cfs has mounted, read from `/proc/self/mountinfo` (proc(5)) rather
//! than a state file, so it can't go stale when a server dies or someone
//! unmounts by hand:
//! - an overlay with source `composefs` is a composefs mount: **fuse+overlay**
//!   when its superblock options hold `userxattr` (its FUSE lower is a
//!   detached mount, in no table), else **kernel**;
//! - a FUSE mount of type `fuse.cfs` is a **standalone FUSE** mount; so is
//!   one of type `fuse` with source `cfs`, which is what `cfs fuse-serve`
//!   as root mounts (fuser's own `mount(2)` ignores the subtype).

use crate::options::OVERLAY_SOURCE;
use crate::MountMode;
use std::path::{Path, PathBuf};

/// One cfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfsMount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// How.
    pub mode: MountMode,
    /// The filesystem type (`overlay`, `fuse.cfs`).
    pub fstype: String,
    /// The superblock options.
    pub super_options: String,
}

/// `\040`-style octal escapes in mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cfs mount a mountinfo line describes, if it is one.
pub fn parse_line(line: &str) -> Option<CfsMount> {
    let (left, right) = line.split_once(" - ")?;
    let mountpoint = unescape(left.split(' ').nth(4)?);
    let mut r = right.split(' ');
    let (fstype, source, super_options) = (r.next()?, r.next()?, r.next().unwrap_or(""));
    let mode = match fstype {
        "overlay" if unescape(source) == OVERLAY_SOURCE => {
            if super_options.split(',').any(|o| o == "userxattr") {
                MountMode::FuseOverlay
            } else {
                MountMode::Kernel
            }
        }
        "fuse.cfs" => MountMode::Fuse,
        "fuse" if unescape(source) == "cfs" => MountMode::Fuse,
        _ => return None,
    };
    Some(CfsMount {
        mountpoint: mountpoint.into(),
        mode,
        fstype: fstype.to_string(),
        super_options: super_options.to_string(),
    })
}

/// Every cfs mount this process can see, in mount order.
pub fn list() -> std::io::Result<Vec<CfsMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_line).collect())
}

/// Mount points (any filesystem) in `/proc/self/mountinfo`, unescaped.
fn all_mountpoints() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|m| PathBuf::from(unescape(m))))
        .collect()
}

/// The top mount at `target` (canonicalised), if something is mounted there:
/// `Some(Some(m))` for a cfs mount, `Some(None)` for another filesystem.
pub fn at(target: &Path) -> Option<Option<CfsMount>> {
    let target = resolve(target)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let top = info.lines().rev().find(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| Path::new(&unescape(m)) == target)
    })?;
    Some(parse_line(top))
}

/// True when something is mounted at `target`.
pub fn is_mountpoint(target: &Path) -> bool {
    resolve(target).is_some_and(|t| all_mountpoints().contains(&t))
}

/// `target` as mountinfo spells it: its parent canonicalised, its own name
/// kept. Only the parent is resolved, because a mount point whose FUSE
/// server died answers lstat with ENOTCONN.
fn resolve(target: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(target).ok()?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Some(std::fs::canonicalize(parent).ok()?.join(name)),
        _ => Some(abs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_mode() {
        let table: &[(&str, Option<(MountMode, &str)>)] = &[
            (
                "120 30 0:77 / /mnt/a rw,relatime - overlay composefs ro,lowerdir+=/proc/self/fd/5,datadir+=/r/objects,redirect_dir=on,metacopy=on,verity=off",
                Some((MountMode::Kernel, "/mnt/a")),
            ),
            (
                "121 30 0:78 / /mnt/with\\040space ro - overlay composefs ro,lowerdir+=/proc/self/fd/7,datadir+=/r/objects,userxattr",
                Some((MountMode::FuseOverlay, "/mnt/with space")),
            ),
            (
                "122 30 0:79 / /home/u/m ro,nosuid,nodev,noatime - fuse.cfs cfs ro,user_id=1000,group_id=1000,default_permissions",
                Some((MountMode::Fuse, "/home/u/m")),
            ),
            (
                "125 30 0:82 / /tmp/fuse-serve ro,noatime - fuse cfs ro,user_id=0,group_id=0,default_permissions,allow_other",
                Some((MountMode::Fuse, "/tmp/fuse-serve")),
            ),
            ("126 30 0:83 / /mnt/sshfs rw - fuse sshfs rw,user_id=0,group_id=0", None),
            ("123 30 0:80 / /var/lib/containers rw - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c", None),
            ("124 30 0:81 / /run/user/1000/doc rw - fuse.portal portal rw", None),
            ("garbage", None),
        ];
        for (line, want) in table {
            let got = parse_line(line).map(|m| (m.mode, m.mountpoint));
            assert_eq!(got, want.map(|(m, p)| (m, PathBuf::from(p))), "{line}");
        }
    }
}
