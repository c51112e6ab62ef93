//! Pure option building: what the erofs and overlayfs filesystem contexts are
//! told (`fsconfig` keys and values), and the `mount.composefs -o` parser.
//! No syscalls here, so every rule is checked by the table tests below.
//!
//! The overlay is composefs' usual stack: the erofs image is the one lower
//! layer (`lowerdir+`), each object directory a data-only lower layer
//! (`datadir+`, Linux 6.7+), with `metacopy=on` so a file's metadata comes from
//! the image and `redirect_dir=on` so its `trusted.overlay.redirect` xattr
//! names the object holding its data. Passing each layer as its own
//! `lowerdir+`/`datadir+` string means paths need no `:`/`,` escaping.

pub use cfs_fuse::{ServeMode, Tuning, Verity};

use cfs_format::Digest;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// One `fsconfig` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// `FSCONFIG_SET_FLAG key`.
    Flag(&'static str),
    /// `FSCONFIG_SET_STRING key=value`.
    Str(&'static str, OsString),
}

impl Param {
    fn s(key: &'static str, value: impl AsRef<OsStr>) -> Param {
        Param::Str(key, value.as_ref().to_owned())
    }
}

/// The `verity=` value overlayfs is given, once [`Verity`] is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayVerity {
    /// `verity=off`.
    Off,
    /// `verity=require`: every metacopy file must carry a digest and its
    /// object must have a matching fs-verity digest.
    Require,
}

impl OverlayVerity {
    /// The overlayfs option value.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlayVerity::Off => "off",
            OverlayVerity::Require => "require",
        }
    }
}

/// The object store can't check contents, and `verity=require` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityUnavailable;

/// Decides the overlay's `verity=` from what was asked and whether the
/// object store (its filesystem and the kernel) has fs-verity.
pub fn overlay_verity(
    asked: Verity,
    store_has_verity: bool,
) -> Result<OverlayVerity, VerityUnavailable> {
    match (asked, store_has_verity) {
        (Verity::Off, _) | (Verity::Try, false) => Ok(OverlayVerity::Off),
        (Verity::Try | Verity::Require, true) => Ok(OverlayVerity::Require),
        (Verity::Require, false) => Err(VerityUnavailable),
    }
}

/// How the erofs image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ErofsBacking {
    /// A loop device where one can be had, else straight from the file. A
    /// loop device reads the image through the image file's page cache, with
    /// its readahead, where file-backed erofs reads each metadata block it
    /// misses on its own: a cold walk of a `/usr` image takes 0.66x the time
    /// (bench/README.md, "erofs on a loop device").
    #[default]
    Auto,
    /// Straight from the file (Linux 6.12+; what C `mount.composefs` does),
    /// a loop device only where the kernel can't mount a file: no loop
    /// device taken from the machine's pool.
    File,
    /// Always through a loop device.
    Loop,
}

/// A writable overlay: where changes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upper {
    /// Receives every change (`upperdir=`).
    pub upperdir: PathBuf,
    /// overlayfs' scratch directory on the same filesystem (`workdir=`).
    pub workdir: PathBuf,
}

/// An image file opened by the caller, shared by the configurations cloned
/// from one (two are equal when they share the open file).
#[derive(Debug, Clone)]
pub struct OpenedImage(std::sync::Arc<std::fs::File>);

impl OpenedImage {
    /// Takes charge of an open image file.
    pub fn new(file: std::fs::File) -> OpenedImage {
        OpenedImage(std::sync::Arc::new(file))
    }

    /// The open file.
    pub fn file(&self) -> &std::fs::File {
        &self.0
    }
}

impl PartialEq for OpenedImage {
    fn eq(&self, other: &OpenedImage) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OpenedImage {}

/// Everything a composefs mount needs to know, in any mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// The composefs (EROFS) image file.
    pub image: PathBuf,
    /// Object directories (`ab/cdef…` layout), searched in order.
    pub basedirs: Vec<PathBuf>,
    /// Upper and work directories for a writable mount.
    pub upper: Option<Upper>,
    /// Mount read-only (with an upper dir this makes changes impossible too).
    pub read_only: bool,
    /// Content checking.
    pub verity: Verity,
    /// The image's expected fs-verity digest (`digest=`).
    pub expected_digest: Option<Digest>,
    /// How erofs gets the image.
    pub backing: ErofsBacking,
    /// FUSE modes: what the user tuned about the server.
    pub tuning: Tuning,
    /// The image, already open (beneath a repository's directory fd, say,
    /// so that no path is resolved again); `image` then only names it.
    pub opened_image: Option<OpenedImage>,
    /// An idmapped mount (kernel mode): the user namespace (a
    /// `/proc/PID/ns/user` path) whose mapping the image's owners go
    /// through, as C's `mount.composefs -o idmap=PATH` (the erofs layer is
    /// idmapped; contents come from the objects, whose owners don't show).
    pub idmap: Option<PathBuf>,
    /// Refuse to mount when objects the image names are in none of the
    /// object directories (`cfs mount` does by default, `--no-check-objects`
    /// skips it; `mount.composefs` doesn't, as C doesn't).
    pub check_objects: bool,
    /// Standalone FUSE: what the server shows. `OverlayLower` mounts the
    /// metadata view an overlay with `userxattr` expects on its own (`cfs
    /// fuse-serve --mode overlay-lower`); fuse+overlay always uses it.
    pub serve_mode: ServeMode,
}

impl MountConfig {
    /// A read-only mount of `image` over the object directory `basedir`.
    pub fn new(image: impl Into<PathBuf>, basedir: impl Into<PathBuf>) -> MountConfig {
        MountConfig {
            image: image.into(),
            basedirs: vec![basedir.into()],
            upper: None,
            read_only: true,
            verity: Verity::Try,
            expected_digest: None,
            backing: ErofsBacking::Auto,
            tuning: Tuning::default(),
            idmap: None,
            check_objects: true,
            serve_mode: ServeMode::Standalone,
            opened_image: None,
        }
    }

    /// Checks combinations no mount can satisfy.
    pub fn validate(&self) -> Result<(), String> {
        if self.basedirs.is_empty() {
            return Err("no object directory given (basedir)".into());
        }
        if !self.read_only && self.upper.is_none() {
            return Err("a writable mount needs an upper and a work directory".into());
        }
        Ok(())
    }
}

/// The `source` composefs overlays show in `/proc/self/mountinfo`, as C does.
pub const OVERLAY_SOURCE: &str = "composefs";

/// The `source` of an overlay the mount service made for a client, so that
/// `cfs mounts` tells it from root's own kernel mounts and `cfs unmount`
/// knows to ask the service.
pub const SERVICE_SOURCE: &str = "composefs-service";

/// The erofs context: `source` is the image (a path, `/proc/self/fd/N`, or a
/// loop device), always read-only; `noacl` unless the image says it holds
/// POSIX ACLs (the composefs header flag), which spares ACL lookups, as C does.
pub fn erofs_params(source: &OsStr, image_has_acl: bool) -> Vec<Param> {
    let mut p = vec![Param::s("source", source), Param::Flag("ro")];
    if !image_has_acl {
        p.push(Param::Flag("noacl"));
    }
    p
}

/// The overlay context over the erofs mount reachable at `lower` (a path).
pub fn overlay_params(lower: &OsStr, cfg: &MountConfig, verity: OverlayVerity) -> Vec<Param> {
    let mut p = vec![
        Param::s("source", OVERLAY_SOURCE),
        Param::s("metacopy", "on"),
        Param::s("redirect_dir", "on"),
        Param::s("verity", verity.as_str()),
        Param::s("lowerdir+", lower),
    ];
    for dir in &cfg.basedirs {
        p.push(Param::s("datadir+", dir));
    }
    if let Some(up) = &cfg.upper {
        p.push(Param::s("upperdir", &up.upperdir));
        p.push(Param::s("workdir", &up.workdir));
    }
    p
}

/// The overlay context of a service mount, before its layers (which are
/// given by fd): always read-only (no upper layer), data-only layers
/// reached by `metacopy` and `redirect_dir`, `verity=` as the client asked.
pub fn service_overlay_params(verity: OverlayVerity) -> Vec<Param> {
    vec![
        Param::s("source", SERVICE_SOURCE),
        Param::s("metacopy", "on"),
        Param::s("redirect_dir", "on"),
        Param::s("verity", verity.as_str()),
    ]
}

/// The options of `mount -t composefs … -o OPTS` (C `mount.composefs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposefsOptions {
    /// `basedir=DIR[:DIR…]`.
    pub basedirs: Vec<PathBuf>,
    /// `digest=HEX`.
    pub digest: Option<Digest>,
    /// `verity` / `tryverity` / `noverity`; C's default is no checking.
    pub verity: Option<Verity>,
    /// `upperdir=`.
    pub upperdir: Option<PathBuf>,
    /// `workdir=`.
    pub workdir: Option<PathBuf>,
    /// `ro` / `rw`; the last one wins.
    pub read_only: Option<bool>,
    /// `idmap=PATH`: a user namespace for an idmapped mount.
    pub idmap: Option<PathBuf>,
}

impl ComposefsOptions {
    /// The mount these options describe. Like C, a mount with an upper dir is
    /// writable unless `ro` is given; without one it is read-only.
    pub fn into_config(self, image: PathBuf) -> Result<MountConfig, String> {
        let upper = match (self.upperdir, self.workdir) {
            (Some(upperdir), Some(workdir)) => Some(Upper { upperdir, workdir }),
            (None, None) => None,
            _ => return Err("Both workdir and upperdir must be specified if used".into()),
        };
        let read_only = self.read_only.unwrap_or(upper.is_none()) || upper.is_none();
        let cfg = MountConfig {
            image,
            basedirs: self.basedirs,
            upper,
            read_only,
            verity: self.verity.unwrap_or(Verity::Off),
            expected_digest: self.digest,
            idmap: self.idmap,
            check_objects: false,
            ..MountConfig::new(PathBuf::new(), PathBuf::new())
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Splits a mount option string at unescaped commas; `\x` stands for `x` in
/// values (C `mount.composefs` escaping), the key ends at the first `=`.
fn split_options(s: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut key = String::new();
    let mut value: Option<String> = None;
    let mut chars = s.chars();
    let mut push = |key: &mut String, value: &mut Option<String>| {
        if !key.is_empty() || value.is_some() {
            out.push((std::mem::take(key), value.take()));
        }
    };
    while let Some(c) = chars.next() {
        match (c, value.as_mut()) {
            (',', _) => push(&mut key, &mut value),
            ('=', None) => value = Some(String::new()),
            ('\\', v) => {
                if let Some(next) = chars.next() {
                    match v {
                        Some(v) => v.push(next),
                        None => key.push(next),
                    }
                }
            }
            (c, Some(v)) => v.push(c),
            (c, None) => key.push(c),
        }
    }
    push(&mut key, &mut value);
    out
}

/// Generic options `mount(8)` may hand a helper that mean nothing to composefs.
fn is_ignored(key: &str) -> bool {
    matches!(key, "defaults" | "auto" | "noauto" | "nofail" | "_netdev") || key.starts_with("x-")
}

/// Parses the `-o` string of `mount -t composefs`.
pub fn parse_composefs_options(s: &str) -> Result<ComposefsOptions, String> {
    let mut o = ComposefsOptions::default();
    let set_verity = |o: &mut ComposefsOptions, v: Verity| match o.verity {
        Some(prev) if prev != v => {
            Err("Incompatible options verity, noverity, tryverity".to_string())
        }
        _ => {
            o.verity = Some(v);
            Ok(())
        }
    };
    for (key, value) in split_options(s) {
        let need = |what: &str| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or(format!("No value specified for {what} option"))
        };
        match key.as_str() {
            "basedir" => {
                o.basedirs = need("basedir")?
                    .split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            "digest" => {
                let hex = need("digest")?;
                o.digest = Some(
                    hex.parse()
                        .map_err(|e| format!("Invalid digest {hex:?}: {e}"))?,
                );
            }
            "verity" => set_verity(&mut o, Verity::Require)?,
            "tryverity" => set_verity(&mut o, Verity::Try)?,
            "noverity" => set_verity(&mut o, Verity::Off)?,
            "upperdir" => o.upperdir = Some(need("upperdir")?.into()),
            "workdir" => o.workdir = Some(need("workdir")?.into()),
            "ro" => o.read_only = Some(true),
            "rw" => o.read_only = Some(false),
            "idmap" => o.idmap = Some(need("idmap")?.into()),
            "signed" => return Err(format!("Unsupported option {key} (not implemented)")),
            k if is_ignored(k) => {}
            k => return Err(format!("Unsupported option {k}")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(p: &[Param]) -> Vec<String> {
        p.iter()
            .map(|p| match p {
                Param::Flag(k) => (*k).to_string(),
                Param::Str(k, v) => format!("{k}={}", v.to_string_lossy()),
            })
            .collect()
    }

    #[test]
    fn verity_resolution_table() {
        use OverlayVerity as O;
        let table = [
            (Verity::Off, false, Ok(O::Off)),
            (Verity::Off, true, Ok(O::Off)),
            (Verity::Try, false, Ok(O::Off)),
            (Verity::Try, true, Ok(O::Require)),
            (Verity::Require, false, Err(VerityUnavailable)),
            (Verity::Require, true, Ok(O::Require)),
        ];
        for (asked, has, want) in table {
            assert_eq!(
                overlay_verity(asked, has),
                want,
                "{asked:?} with verity={has}"
            );
        }
        assert_eq!(O::Off.as_str(), "off");
        assert_eq!(O::Require.as_str(), "require");
    }

    #[test]
    fn erofs_params_table() {
        assert_eq!(
            strs(&erofs_params(OsStr::new("/proc/self/fd/3"), false)),
            ["source=/proc/self/fd/3", "ro", "noacl"]
        );
        assert_eq!(
            strs(&erofs_params(OsStr::new("/dev/loop0"), true)),
            ["source=/dev/loop0", "ro"]
        );
    }

    #[test]
    fn overlay_params_for_each_verity_mode_and_writability() {
        let mut cfg = MountConfig::new("/i.cfs", "/objects");
        let ro_off = strs(&overlay_params(
            OsStr::new("/proc/self/fd/7"),
            &cfg,
            OverlayVerity::Off,
        ));
        assert_eq!(
            ro_off,
            [
                "source=composefs",
                "metacopy=on",
                "redirect_dir=on",
                "verity=off",
                "lowerdir+=/proc/self/fd/7",
                "datadir+=/objects",
            ]
        );
        let req = strs(&overlay_params(
            OsStr::new("/l"),
            &cfg,
            OverlayVerity::Require,
        ));
        assert_eq!(req[3], "verity=require");

        cfg.basedirs.push("/more objects,with comma".into());
        cfg.upper = Some(Upper {
            upperdir: "/up".into(),
            workdir: "/work".into(),
        });
        cfg.read_only = false;
        let rw = strs(&overlay_params(OsStr::new("/l"), &cfg, OverlayVerity::Off));
        assert_eq!(
            rw[4..],
            [
                "lowerdir+=/l",
                "datadir+=/objects",
                "datadir+=/more objects,with comma",
                "upperdir=/up",
                "workdir=/work",
            ]
        );
    }

    #[test]
    fn config_validation() {
        let mut cfg = MountConfig::new("/i", "/o");
        assert_eq!(cfg.validate(), Ok(()));
        cfg.read_only = false;
        assert!(cfg.validate().unwrap_err().contains("upper"));
        cfg.basedirs.clear();
        assert!(cfg.validate().unwrap_err().contains("basedir"));
    }

    #[test]
    fn option_splitting_with_escapes() {
        assert_eq!(
            split_options(r"basedir=/a\,b:/c,ro,,digest=x\\y"),
            [
                ("basedir".to_string(), Some("/a,b:/c".to_string())),
                ("ro".to_string(), None),
                ("digest".to_string(), Some(r"x\y".to_string())),
            ]
        );
        assert_eq!(split_options(""), []);
        assert_eq!(split_options("a=b=c"), [("a".into(), Some("b=c".into()))]);
    }

    #[test]
    fn composefs_options_table() {
        let d = "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92";
        let o = parse_composefs_options(&format!("basedir=/o1:/o2,digest={d},verity,ro")).unwrap();
        assert_eq!(o.basedirs, [PathBuf::from("/o1"), PathBuf::from("/o2")]);
        assert_eq!(o.digest.unwrap().to_hex(), d);
        assert_eq!(o.verity, Some(Verity::Require));
        assert_eq!(o.read_only, Some(true));

        for (opts, verity) in [
            ("basedir=/o,noverity", Verity::Off),
            ("basedir=/o,tryverity", Verity::Try),
            ("basedir=/o,verity", Verity::Require),
            ("basedir=/o", Verity::Off),
        ] {
            let cfg = parse_composefs_options(opts)
                .unwrap()
                .into_config("/i".into())
                .unwrap();
            assert_eq!(cfg.verity, verity, "{opts}");
            assert!(cfg.read_only, "{opts}: read-only without an upper dir");
        }

        let rw = parse_composefs_options("basedir=/o,upperdir=/u,workdir=/w")
            .unwrap()
            .into_config("/i".into())
            .unwrap();
        assert!(!rw.read_only);
        let ro = parse_composefs_options("basedir=/o,upperdir=/u,workdir=/w,ro")
            .unwrap()
            .into_config("/i".into())
            .unwrap();
        assert!(ro.read_only);
        assert!(parse_composefs_options("basedir=/o,defaults,x-systemd.automount,rw").is_ok());
        let idmapped = parse_composefs_options("basedir=/o,idmap=/proc/42/ns/user")
            .unwrap()
            .into_config("/i".into())
            .unwrap();
        assert_eq!(idmapped.idmap, Some(PathBuf::from("/proc/42/ns/user")));

        for (bad, why) in [
            ("verity,noverity", "Incompatible"),
            ("basedir", "No value specified for basedir"),
            ("idmap", "No value specified for idmap"),
            ("digest=12", "Invalid digest"),
            ("frob=1", "Unsupported option frob"),
            ("signed", "Unsupported option signed"),
        ] {
            let e = parse_composefs_options(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for (bad, why) in [
            ("basedir=/o,upperdir=/u", "Both workdir and upperdir"),
            ("digest=", "No value"),
            ("ro", "no object directory"),
        ] {
            let e = parse_composefs_options(bad)
                .and_then(|o| o.into_config("/i".into()))
                .unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
