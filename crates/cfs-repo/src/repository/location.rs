//! Where the default repository is, for whoever runs cfs.
//!
//! `/var/lib/cfs` belongs to the machine's root; everyone else gets
//! `$XDG_DATA_HOME/cfs` (an absolute path) or `~/.local/share/cfs`. "Root"
//! means the real one: root of a user namespace (`unshare -Urm`, a rootless
//! container) is the user who made it, so its default is that user's
//! repository, not root's (which it could not read anyway). Which user that
//! is comes from `/proc/self/uid_map`: the id outside the namespace that the
//! caller's id maps to. Whether the process is in a child user namespace at
//! all is the caller's to say ([`UserNamespace`]): the CLI asks `cfs-mount`'s
//! detection, the one home of that probe.
//!
//! `HOME` comes from the environment, else from the passwd entry of that
//! uid (`/etc/passwd`; users known only to other NSS sources need `HOME`
//! set, or `--repo`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The system-wide default repository, for the machine's root.
pub const SYSTEM_REPOSITORY: &str = "/var/lib/cfs";

/// Which user namespace this process is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNamespace {
    /// The machine's own: uids are the real ones.
    Initial,
    /// A child namespace: uid 0 here is whoever created it.
    Child,
}

/// The default repository of this process, in the user namespace `ns`:
/// [`SYSTEM_REPOSITORY`] when the real user is root, else that user's data
/// directory. `None` when no home directory is known.
pub fn default_path(ns: UserNamespace) -> Option<PathBuf> {
    let uid = rustix::process::getuid().as_raw();
    let real = match ns {
        UserNamespace::Initial => Some(uid),
        UserNamespace::Child => std::fs::read_to_string("/proc/self/uid_map")
            .ok()
            .and_then(|map| outer_uid(&map, uid)),
    };
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    choose(real, env("XDG_DATA_HOME"), env("HOME"), |uid| {
        std::fs::read("/etc/passwd")
            .ok()
            .and_then(|p| passwd_home(&p, uid))
    })
}

/// The rule, pure: root (the real uid 0) gets [`SYSTEM_REPOSITORY`]; any
/// other user (or one whose real uid is unknown: an unmapped id)
/// `$XDG_DATA_HOME/cfs` when that is absolute, else `HOME/.local/share/cfs`,
/// `HOME` from the environment or else from the passwd entry of the real uid.
pub fn choose(
    real_uid: Option<u32>,
    xdg_data_home: Option<OsString>,
    home: Option<OsString>,
    passwd_home: impl FnOnce(u32) -> Option<PathBuf>,
) -> Option<PathBuf> {
    if real_uid == Some(0) {
        return Some(PathBuf::from(SYSTEM_REPOSITORY));
    }
    if let Some(xdg) = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(xdg.join("cfs"));
    }
    let home = home
        .map(PathBuf::from)
        .or_else(|| real_uid.and_then(passwd_home))?;
    Some(home.join(".local/share/cfs"))
}

/// The id in the parent namespace that `uid` (an id in this one) maps to,
/// from the text of `/proc/self/uid_map` (lines `INSIDE OUTSIDE COUNT`).
pub fn outer_uid(uid_map: &str, uid: u32) -> Option<u32> {
    uid_map.lines().find_map(|line| {
        let mut f = line.split_whitespace().map(|v| v.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        let uid = u64::from(uid);
        (inside <= uid && uid < inside + count)
            .then(|| u32::try_from(outside + (uid - inside)).ok())
            .flatten()
    })
}

/// The home directory of `uid` in a passwd file
/// (`name:password:uid:gid:gecos:home:shell`), the first entry for it.
pub fn passwd_home(passwd: &[u8], uid: u32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    passwd.split(|&b| b == b'\n').find_map(|line| {
        let f: Vec<&[u8]> = line.split(|&b| b == b':').collect();
        let entry_uid = std::str::from_utf8(f.get(2)?).ok()?.parse::<u32>().ok()?;
        let home = Path::new(std::ffi::OsStr::from_bytes(f.get(5)?));
        (entry_uid == uid && home.is_absolute()).then(|| home.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_uid_from_uid_maps() {
        // unshare -Urm by uid 1000: root inside is 1000 outside.
        assert_eq!(
            outer_uid("         0       1000          1\n", 0),
            Some(1000)
        );
        // Subordinate ids mapped as well (newuidmap).
        let map = "0 1000 1\n1 100000 65536\n";
        assert_eq!(outer_uid(map, 0), Some(1000));
        assert_eq!(outer_uid(map, 1), Some(100_000));
        assert_eq!(outer_uid(map, 65536), Some(165_535));
        assert_eq!(outer_uid(map, 65537), None);
        // The initial namespace's identity map.
        assert_eq!(outer_uid("0 0 4294967295\n", 42), Some(42));
        assert_eq!(outer_uid("", 0), None);
        assert_eq!(outer_uid("garbage\n0 x 1\n", 0), None);
    }

    #[test]
    fn passwd_home_of_a_uid() {
        let passwd = b"root:x:0:0:root:/root:/bin/bash\n\
                       bad line\n\
                       cfs-test:x:1001:1001::/home/cfs-test:/bin/sh\n\
                       rel:x:1002:1002::relative:/bin/sh\n";
        assert_eq!(passwd_home(passwd, 0), Some("/root".into()));
        assert_eq!(passwd_home(passwd, 1001), Some("/home/cfs-test".into()));
        assert_eq!(passwd_home(passwd, 1002), None);
        assert_eq!(passwd_home(passwd, 7), None);
    }

    /// (real uid, XDG_DATA_HOME, HOME) -> repository
    type Row = (
        Option<u32>,
        Option<OsString>,
        Option<OsString>,
        Option<&'static str>,
    );

    #[test]
    fn the_rule_by_real_user() {
        let none = |_| None;
        let passwd = |uid| (uid == 1000).then(|| PathBuf::from("/home/u"));
        let os = |s: &str| Some(OsString::from(s));
        let table: &[Row] = &[
            (Some(0), None, os("/root"), Some("/var/lib/cfs")),
            (Some(0), os("/x"), None, Some("/var/lib/cfs")),
            (Some(1000), os("/data"), os("/home/u"), Some("/data/cfs")),
            (
                Some(1000),
                os("relative"),
                os("/h"),
                Some("/h/.local/share/cfs"),
            ),
            (Some(1000), None, os("/h"), Some("/h/.local/share/cfs")),
            (Some(1000), None, None, Some("/home/u/.local/share/cfs")),
            (Some(1001), None, None, None),
            // An unmapped id: whoever it is, not root.
            (None, None, os("/h"), Some("/h/.local/share/cfs")),
            (None, None, None, None),
        ];
        for (uid, xdg, home, want) in table {
            let got = choose(*uid, xdg.clone(), home.clone(), passwd);
            assert_eq!(
                got.as_deref(),
                want.map(Path::new),
                "{uid:?} {xdg:?} {home:?}"
            );
        }
        assert_eq!(choose(Some(5), None, None, none), None);
    }
}
