//! Pins: live mounts are roots for gc.
//!
//! Every mount made from a repository image records a pin file
//! `REPO/pins/NSID-MNTID` naming the image and the mount: the mount's
//! unique id (`statx` `STATX_MNT_ID_UNIQUE`, never reused while the kernel
//! runs), the id of its mount namespace, and the boot it was made in
//! (`/proc/sys/kernel/random/boot_id`). A pin is live while `statmount(2)`
//! finds that mount in that namespace in this boot; `gc` keeps the images of
//! live pins and their objects, and deletes stale pins. So a mount pins its
//! image exactly as long as it exists, however it goes away (`cfs unmount`,
//! `umount`, a server's lazy unmount, its mount namespace dying with its
//! last process, a reboot), and nothing has to be told when it does.
//!
//! Ordering: [`Repository::begin_mount`] takes the shared lock before it
//! resolves the image, and [`PendingMount::pin`] writes the pin (once the
//! mount is attached) before releasing it. gc holds the lock exclusively, so
//! it runs either before the image was resolved (and the image is still
//! named, or the mount fails to find it) or after the pin exists. A pin
//! whose mount can't be checked (a namespace this user may not look into,
//! a kernel before 6.11) is kept, and gc says so.

use super::{beneath, LockMode, RepoError, RepoLock, Repository};
use crate::sys::{self, MountId};
use cfs_format::Digest;
use rustix::fs::{AtFlags, Mode, OFlags};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The pins directory, relative to the repository.
pub(super) const PINS: &str = "pins";

/// A recorded pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Its file, relative to the repository.
    pub path: PathBuf,
    /// The image it keeps.
    pub image: Digest,
    /// The mount holding it.
    pub mount: MountId,
    /// Where it was mounted (informational; mounts move).
    pub mountpoint: String,
    /// The user the mount was made for, when a service mounted it for
    /// someone (`owner UID` in the file): who may ask to unmount it.
    pub owner: Option<u32>,
    /// Whether that mount still exists.
    pub state: PinState,
}

/// Whether a pin's mount still exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// The kernel still has the mount: the image is in use.
    Live,
    /// The mount is gone (or was made before the last boot).
    Stale,
    /// The kernel could not tell (why); the pin is kept to be safe.
    Unknown(String),
}

/// A mount of a repository image in the making: holds the shared lock from
/// resolving the image until [`pin`](Self::pin) records the mount (or until
/// dropped, when the mount failed).
#[derive(Debug)]
pub struct PendingMount {
    repo: Repository,
    image: Digest,
    file: PathBuf,
    opened: std::fs::File,
    _lock: RepoLock,
}

impl Repository {
    /// Starts mounting the image `name` (a name or an id): takes the shared
    /// lock (so gc waits), then resolves the image. Mount
    /// [`PendingMount::image_file`], then call [`PendingMount::pin`].
    pub fn begin_mount(self, name: &str) -> Result<PendingMount, RepoError> {
        let lock = self.lock(LockMode::Shared)?;
        let image = self.resolve(name)?;
        let opened = self.image_object(&image)?;
        let file = self.objects.object_path(&image);
        Ok(PendingMount {
            repo: self,
            image,
            file,
            opened,
            _lock: lock,
        })
    }

    /// Starts mounting an image given as bytes (a mount service's cache of
    /// validated images): takes the shared lock, stores the bytes as an
    /// object unless present, links `images/ID`, and returns the pending
    /// mount of that image, unnamed: once its pin is gone, gc removes it.
    pub fn begin_mount_image(self, bytes: &[u8]) -> Result<PendingMount, RepoError> {
        let lock = self.lock(LockMode::Shared)?;
        let stored = self.objects.insert_bytes_as(bytes, "an image")?;
        self.link_image_id(&stored.digest)?;
        let opened = self.image_object(&stored.digest)?;
        let file = self.objects.object_path(&stored.digest);
        Ok(PendingMount {
            repo: self,
            image: stored.digest,
            file,
            opened,
            _lock: lock,
        })
    }

    /// Every pin, with the state of its mount; malformed pin files are left
    /// out (fsck reports them).
    pub fn pins(&self) -> Result<Vec<Pin>, RepoError> {
        let names = match beneath::open_dir(&self.dir, PINS) {
            Ok(dir) => {
                beneath::names(&dir).map_err(RepoError::io("read", &self.path.join(PINS)))?
            }
            Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(RepoError::io("open", &self.path.join(PINS))(e)),
        };
        let boot = boot_id();
        let mut out = Vec::new();
        for name in names {
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let rel = Path::new(PINS).join(name);
            if let Ok(Some(pin)) = self.read_pin(&rel, name, boot.as_deref()) {
                out.push(pin);
            }
        }
        Ok(out)
    }

    /// The live (or unverifiable) pins of an image: its mounts.
    pub fn mounts_of(&self, image: &Digest) -> Result<Vec<Pin>, RepoError> {
        Ok(self
            .pins()?
            .into_iter()
            .filter(|p| p.image == *image && p.state != PinState::Stale)
            .collect())
    }

    /// Reads and checks one pin file; `None` when it is malformed.
    fn read_pin(
        &self,
        rel: &Path,
        name: &str,
        boot: Option<&str>,
    ) -> Result<Option<Pin>, RepoError> {
        let full = self.path.join(rel);
        let fd = beneath::open(
            &self.dir,
            &rel.to_string_lossy(),
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(RepoError::io("open", &full))?;
        let mut buf = vec![0u8; 8192];
        let n = rustix::io::read(&fd, &mut buf).map_err(RepoError::io("read", &full))?;
        let Some(record) = parse_pin(&String::from_utf8_lossy(&buf[..n])) else {
            return Ok(None);
        };
        if name != pin_name(record.mount) {
            return Ok(None);
        }
        let state = if boot.is_some() && record.boot.as_deref() != boot {
            PinState::Stale
        } else {
            match sys::mount_exists(record.mount) {
                Ok(true) => PinState::Live,
                Ok(false) => PinState::Stale,
                Err(e) => PinState::Unknown(std::io::Error::from(e).to_string()),
            }
        };
        Ok(Some(Pin {
            path: rel.to_path_buf(),
            image: record.image,
            mount: record.mount,
            mountpoint: record.mountpoint,
            owner: record.owner,
            state,
        }))
    }

    /// Removes a pin file (gc, for stale pins, under the exclusive lock).
    pub(super) fn remove_pin(&self, pin: &Pin) -> Result<(), RepoError> {
        self.remove_file(&pin.path)
    }

    /// Removes temporary pin files a killed mount left (gc, under the
    /// exclusive lock, so no mount is writing one); returns their paths.
    pub(super) fn remove_pin_temporaries(&self, dry_run: bool) -> Result<Vec<PathBuf>, RepoError> {
        let names = match beneath::open_dir(&self.dir, PINS) {
            Ok(dir) => {
                beneath::names(&dir).map_err(RepoError::io("read", &self.path.join(PINS)))?
            }
            Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
            Err(e) => return Err(RepoError::io("open", &self.path.join(PINS))(e)),
        };
        let mut out = Vec::new();
        for name in names
            .iter()
            .filter(|n| n.as_encoded_bytes().starts_with(b".tmp-"))
        {
            let rel = Path::new(PINS).join(name);
            if !dry_run {
                self.remove_file(&rel)?;
            }
            out.push(rel);
        }
        Ok(out)
    }
}

impl PendingMount {
    /// The image being mounted.
    pub fn image(&self) -> Digest {
        self.image
    }

    /// The image file to mount (the image's object, see [`Repository::image_file`]).
    pub fn image_file(&self) -> &Path {
        &self.file
    }

    /// The image file, as opened beneath the repository's fd when the name
    /// was resolved: what to mount (its path would be resolved again).
    pub fn opened_image(&self) -> &std::fs::File {
        &self.opened
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Records that the mount now at `mountpoint` uses the image, and
    /// releases the lock. Call once the mount is attached.
    pub fn pin(self, mountpoint: &Path) -> Result<Pin, RepoError> {
        let mount =
            sys::mount_at(mountpoint).map_err(RepoError::io("find the mount at", mountpoint))?;
        self.pin_mount(mount, &mountpoint.display().to_string(), None)
    }

    /// Records that the mount `mount` uses the image (`mountpoint` is
    /// informational, `owner` the user it was made for, if made on someone's
    /// behalf), and releases the lock: for a mount known by its id, in a
    /// mount namespace where this process can't look it up by path.
    pub fn pin_mount(
        self,
        mount: MountId,
        mountpoint: &str,
        owner: Option<u32>,
    ) -> Result<Pin, RepoError> {
        let repo = &self.repo;
        let pins = beneath::create_dirs(&repo.dir, PINS, Mode::from_raw_mode(0o700))
            .map_err(RepoError::io("create", &repo.path.join(PINS)))?;
        let record = PinRecord {
            image: self.image,
            mount,
            boot: boot_id(),
            mountpoint: mountpoint.replace('\n', "?"),
            owner,
        };
        let name = pin_name(mount);
        write_pin(&pins, &repo.path.join(PINS), &name, &record.to_text())?;
        Ok(Pin {
            path: Path::new(PINS).join(&name),
            image: self.image,
            mount,
            mountpoint: record.mountpoint,
            owner,
            state: PinState::Live,
        })
    }
}

/// `NSID-MNTID`: one pin per mount.
fn pin_name(m: MountId) -> String {
    format!("{}-{}", m.mnt_ns_id, m.mnt_id)
}

/// Writes `text` as `dir/name` through a temporary name and a rename, so
/// gc never reads half a pin.
fn write_pin(dir: &OwnedFd, dir_path: &Path, name: &str, text: &str) -> Result<(), RepoError> {
    let tmp = format!(".tmp-{}-{name}", std::process::id());
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = beneath::open(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o600),
    )
    .map_err(RepoError::io("create", &dir_path.join(&tmp)))?;
    let written = rustix::io::write(&fd, text.as_bytes());
    if written != Ok(text.len()) {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        let e = written.err().unwrap_or(rustix::io::Errno::NOSPC);
        return Err(RepoError::io("write", &dir_path.join(&tmp))(e));
    }
    rustix::fs::renameat(dir, tmp.as_str(), dir, name).map_err(|e| {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        RepoError::io("rename", &dir_path.join(name))(e)
    })
}

/// This boot's id, if the kernel says.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What a pin file says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PinRecord {
    image: Digest,
    mount: MountId,
    boot: Option<String>,
    mountpoint: String,
    owner: Option<u32>,
}

impl PinRecord {
    fn to_text(&self) -> String {
        let mut t = format!(
            "image {}\nmnt_ns_id {}\nmnt_id {}\n",
            self.image, self.mount.mnt_ns_id, self.mount.mnt_id
        );
        if let Some(b) = &self.boot {
            t.push_str(&format!("boot {b}\n"));
        }
        if let Some(uid) = self.owner {
            t.push_str(&format!("owner {uid}\n"));
        }
        t.push_str(&format!("mountpoint {}\n", self.mountpoint));
        t
    }
}

/// Parses a pin file: `KEY VALUE` lines; `image`, `mnt_ns_id` and `mnt_id`
/// are required, unknown keys ignored.
fn parse_pin(text: &str) -> Option<PinRecord> {
    let (mut image, mut ns, mut id, mut boot, mut mountpoint) = (None, None, None, None, None);
    let mut owner = None;
    for line in text.lines() {
        let (key, value) = line.split_once(' ')?;
        match key {
            "image" => image = Some(Digest::from_hex(value.as_bytes()).ok()?),
            "mnt_ns_id" => ns = Some(value.parse::<u64>().ok()?),
            "mnt_id" => id = Some(value.parse::<u64>().ok()?),
            "boot" => boot = Some(value.to_owned()),
            "mountpoint" => mountpoint = Some(value.to_owned()),
            "owner" => owner = Some(value.parse::<u32>().ok()?),
            _ => {}
        }
    }
    Some(PinRecord {
        image: image?,
        mount: MountId {
            mnt_ns_id: ns?,
            mnt_id: id?,
        },
        boot,
        mountpoint: mountpoint.unwrap_or_default(),
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_text_round_trips_and_garbage_is_refused() {
        let r = PinRecord {
            image: Digest([7; 32]),
            mount: MountId {
                mnt_ns_id: 4026531841,
                mnt_id: 2147483700,
            },
            boot: Some("0b8a…".into()),
            mountpoint: "/mnt/a b".into(),
            owner: None,
        };
        assert_eq!(parse_pin(&r.to_text()), Some(r.clone()));
        let owned = PinRecord {
            owner: Some(1001),
            ..r
        };
        assert_eq!(parse_pin(&owned.to_text()), Some(owned));
        for bad in [
            "",
            "image xyz\nmnt_ns_id 1\nmnt_id 2\n",
            "image 0707070707070707070707070707070707070707070707070707070707070707\nmnt_ns_id 1\nmnt_id 2\nowner x\n",
            "mnt_ns_id 1\nmnt_id 2\n",
            "junk",
        ] {
            assert_eq!(parse_pin(bad), None, "{bad:?}");
        }
    }
}
