//! `cfs mount-service`: a root daemon that gives unprivileged clients
//! kernel composefs mounts (erofs + overlayfs), the design composefs'
//! maintainers settled on (containers/composefs#409) and systemd-mountfsd
//! follows for disk images. docs/mount-service.md has the threat model.
//!
//! - [`listen`]: the socket (systemd socket activation, else `--socket`),
//!   open to every local user; access is decided per request.
//! - `handle`: one connection, one request: the peer as the kernel names it
//!   (`cfs_mount::service::Peer`), limits, the answer, a log line.
//! - `checks`: the fds a client sent, checked without asking their file
//!   system anything.
//! - [`validate`]: the kernel never parses client bytes: an image is read
//!   with the bounds-checked reader, checked, written again with the
//!   writer, and accepted only when that gives the same bytes.
//! - [`cache`]: validated images, root-owned, by image id; a cfs
//!   repository whose pins are the live mounts, their owners, and what gc
//!   keeps.
//! - [`limits`]: per-user (the uid a client is charged to) and global
//!   caps, timeouts.
//!
//! Mounting itself is `cfs_mount::service::MountForPeer` (the overlay
//! created with the client's credentials, in its mount namespace).

pub mod cache;
mod checks;
mod handle;
pub mod limits;
pub mod listen;
pub mod validate;

pub use limits::Limits;

use cache::Cache;
use cfs_format::Digest;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use validate::ImageFacts;

/// `cfs mount-service` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The socket to listen on, unless systemd passes one.
    #[arg(long, value_name = "PATH", default_value = cfs_mount::service::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The cache of validated images (a cfs repository, private to root).
    #[arg(long, value_name = "DIR", default_value = "/var/cache/cfs-mount")]
    pub cache: PathBuf,
    /// Seconds between collections of the cache (images no mount uses any
    /// more: unmounted, or gone with their mount namespace); it is also
    /// collected at start and after each unmount.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub collect_every: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: Limits,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Not root in the initial user namespace.
    #[error("the mount service must run as root (CAP_SYS_ADMIN in the initial user namespace)")]
    NotRoot,
    /// No socket.
    #[error(transparent)]
    Listen(#[from] listen::ListenError),
    /// No cache.
    #[error("the cache: {0}")]
    Cache(#[from] cfs_repo::repository::RepoError),
}

/// What every connection shares.
pub(crate) struct State {
    pub(crate) limits: Limits,
    pub(crate) cache: Cache,
    pub(crate) gate: limits::Gate,
    /// Facts of images validated by this run, by id.
    known: Mutex<HashMap<Digest, ImageFacts>>,
    /// Held while unmounting.
    pub(crate) unmounting: Mutex<()>,
    collect: Mutex<mpsc::Sender<()>>,
}

impl State {
    pub(crate) fn known(&self, id: &Digest) -> Option<ImageFacts> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    pub(crate) fn remember(&self, facts: ImageFacts) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: forgetting costs a validation, never correctness.
        if known.len() >= 4096 {
            known.clear();
        }
        known.insert(facts.id, facts);
    }

    /// Asks the collector to run (after an unmount).
    pub(crate) fn collect_soon(&self) {
        let _ = self
            .collect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(());
    }
}

/// A line on stderr (the journal, under systemd).
pub(crate) fn log(line: &str) {
    eprintln!("cfs mount-service: {line}");
}

/// Runs the service until killed.
pub fn run(args: &ServiceArgs) -> Result<(), StartError> {
    if !cfs_mount::Privilege::probe().initial_admin() {
        return Err(StartError::NotRoot);
    }
    let listener = listen::listener(&args.socket)?;
    let cache = Cache::open(&args.cache)?;
    let (tx, rx) = mpsc::channel();
    let state = Arc::new(State {
        limits: args.limits.clone(),
        cache,
        gate: limits::Gate::default(),
        known: Mutex::new(HashMap::new()),
        unmounting: Mutex::new(()),
        collect: Mutex::new(tx),
    });
    collect(&state);
    let collector = state.clone();
    let every = Duration::from_secs(args.collect_every.max(1));
    std::thread::spawn(move || loop {
        match rx.recv_timeout(every) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => collect(&collector),
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    });
    log(&format!(
        "listening on {}, cache {}",
        listener.what,
        state.cache.path().display()
    ));
    loop {
        let conn = match rustix::net::accept_with(&listener.fd, rustix::net::SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(e) => {
                // Out of fds or memory: wait rather than spin.
                log(&format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        // Bounded before a thread is started for it.
        let Some(slot) = ConnectionSlot::take(&state) else {
            log("refused a connection: too many in progress");
            let _ = rustix::net::sockopt::set_socket_timeout(
                &conn,
                rustix::net::sockopt::Timeout::Send,
                Some(Duration::from_secs(1)),
            );
            handle::refuse_unread(&conn, "the service is busy; try again".into());
            continue;
        };
        let spawned = std::thread::Builder::new()
            .name("cfs-mount-conn".into())
            .spawn(move || handle::connection(&slot.0, conn));
        if let Err(e) = spawned {
            log(&format!("could not start a thread for a connection: {e}"));
        }
    }
}

/// A connection in progress, counted until dropped.
struct ConnectionSlot(Arc<State>);

impl ConnectionSlot {
    fn take(state: &Arc<State>) -> Option<ConnectionSlot> {
        state
            .gate
            .enter_connection(state.limits.max_connections)
            .then(|| ConnectionSlot(state.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.gate.leave_connection();
    }
}

/// Collects the cache, logging what went.
fn collect(state: &State) {
    match state.cache.collect() {
        Ok(r) if r.images_removed.is_empty() && r.stale_pins_removed == 0 => {}
        Ok(r) => log(&format!(
            "cache: removed {} images no mount uses and {} records of mounts gone",
            r.images_removed.len(),
            r.stale_pins_removed
        )),
        Err(e) => log(&format!("cache: could not collect: {e}")),
    }
}
