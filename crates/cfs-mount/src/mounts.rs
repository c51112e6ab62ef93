//! What cfs has mounted, read from `/proc/self/mountinfo` (proc(5)) rather
//! than a state file, so it can't go stale when a server dies or someone
//! unmounts by hand:
//! - an overlay with source `composefs` is a composefs mount: **fuse+overlay**
//!   when its superblock options hold `userxattr` (its FUSE lower is a
//!   detached mount, in no table), else **kernel**;
//! - an overlay with source `composefs-service` is a **service** mount, made
//!   by `cfs mount-service` for a client;
//! - a FUSE mount of type `fuse.cfs` is a **standalone FUSE** mount; so is
//!   one of type `fuse` with source `cfs` (what older `cfs fuse-serve`
//!   mounted as root, with fuser's own `mount(2)`, which drops the subtype).
//!
//! Paths are kept as the bytes they are (mountinfo escapes space, tab,
//! newline and backslash as `\ooo`); [`escape`] writes them back the same
//! way for printing, so a mount point with a newline in its name can't
//! forge a line of `cfs mounts`.

use crate::options::{OVERLAY_SOURCE, SERVICE_SOURCE};
use crate::MountMode;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One row of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount id (`STATX_MNT_ID`).
    pub id: u64,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The filesystem type (`overlay`, `fuse.cfs`, …).
    pub fstype: String,
    /// The mount source.
    pub source: OsString,
    /// The superblock options.
    pub super_options: String,
}

impl MountInfo {
    /// The cfs mode of this mount, if it is a cfs mount.
    pub fn cfs_mode(&self) -> Option<MountMode> {
        let source = self.source.as_bytes();
        match self.fstype.as_str() {
            "overlay" if source == OVERLAY_SOURCE.as_bytes() => {
                Some(if self.super_options.split(',').any(|o| o == "userxattr") {
                    MountMode::FuseOverlay
                } else {
                    MountMode::Kernel
                })
            }
            "overlay" if source == SERVICE_SOURCE.as_bytes() => Some(MountMode::Service),
            "fuse.cfs" => Some(MountMode::Fuse),
            "fuse" if source == b"cfs" => Some(MountMode::Fuse),
            _ => None,
        }
    }
}

/// One cfs mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfsMount {
    /// The mount id (`STATX_MNT_ID`, the first mountinfo field).
    pub mount_id: u64,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// How.
    pub mode: MountMode,
    /// The filesystem type (`overlay`, `fuse.cfs`).
    pub fstype: String,
    /// The superblock options.
    pub super_options: String,
}

/// `\ooo` octal escapes in mountinfo fields, undone, as bytes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `path` as one printable, unambiguous field: bytes that are not printable
/// UTF-8 (control characters, invalid sequences), space and backslash as
/// `\ooo`, as mountinfo writes them; everything else as is.
pub fn escape(path: &Path) -> String {
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == ' ' || c == '\\' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// The mountinfo row `line` describes.
pub fn parse_row(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let mountpoint = PathBuf::from(OsString::from_vec(unescape(l.nth(3)?)));
    let mut r = right.split(' ');
    let (fstype, source, super_options) = (r.next()?, r.next()?, r.next().unwrap_or(""));
    Some(MountInfo {
        id,
        mountpoint,
        fstype: fstype.to_string(),
        source: OsString::from_vec(unescape(source)),
        super_options: super_options.to_string(),
    })
}

/// The cfs mount a mountinfo line describes, if it is one.
pub fn parse_line(line: &str) -> Option<CfsMount> {
    let row = parse_row(line)?;
    Some(CfsMount {
        mode: row.cfs_mode()?,
        mount_id: row.id,
        mountpoint: row.mountpoint,
        fstype: row.fstype,
        super_options: row.super_options,
    })
}

/// Every mount this process can see, in mount order.
pub fn all() -> std::io::Result<Vec<MountInfo>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_row).collect())
}

/// Every cfs mount this process can see, in mount order.
pub fn list() -> std::io::Result<Vec<CfsMount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_line).collect())
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
            (
                "127 30 0:84 / /home/u/img ro,nosuid,nodev - overlay composefs-service ro,lowerdir+=/,datadir+=/home/u/r/objects,redirect_dir=on,metacopy=on,verity=off",
                Some((MountMode::Service, "/home/u/img")),
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
        assert_eq!(parse_line(table[0].0).unwrap().mount_id, 120);
    }

    #[test]
    fn escaping_is_unambiguous_and_matches_mountinfo() {
        let table: &[(&[u8], &str)] = &[
            (b"/mnt/plain", "/mnt/plain"),
            (b"/mnt/with space", "/mnt/with\\040space"),
            (b"/mnt/a\nfuse\t/x", "/mnt/a\\012fuse\\011/x"),
            (b"/mnt/back\\slash", "/mnt/back\\134slash"),
            (b"/mnt/caf\xc3\xa9", "/mnt/caf\u{e9}"),
            (b"/mnt/bad\xff", "/mnt/bad\\377"),
        ];
        for (raw, want) in table {
            let p = Path::new(std::ffi::OsStr::from_bytes(raw));
            assert_eq!(escape(p), *want, "{raw:?}");
            assert_eq!(unescape(want).as_slice(), &raw[..], "{want}");
            assert!(!escape(p).contains('\n'));
        }
        let row = parse_row("7 1 0:5 / /m/a\\012b ro - fuse.cfs cfs ro").unwrap();
        assert_eq!(row.mountpoint.as_os_str().as_bytes(), b"/m/a\nb");
    }
}
