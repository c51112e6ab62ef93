//! A FUSE session: the INIT handshake on `/dev/fuse`, the choice of
//! transport, and serving until the connection ends.
//!
//! INIT always comes through `/dev/fuse`. The kernel offers
//! `FUSE_OVER_IO_URING` in it when its `enable_uring` parameter is on; the
//! server takes it (with [`FuseTransport::Auto`] or `Uring`) by answering
//! with the flag, and only then may register ring entries. Until every
//! queue (one per possible CPU) has an entry the kernel keeps sending
//! requests through `/dev/fuse`, and FORGET and INTERRUPT always come that
//! way, so one `/dev/fuse` worker runs beside the queues.

use crate::abi::{self, init, InitOut, OutHeader};
use crate::reply::Answer;
use crate::request::{Op, Request};
use crate::server::CfsFs;
use crate::{dev, uring, FuseTransport, ServeFailed, Tuning};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zerocopy::IntoBytes;

/// The largest WRITE the kernel may send (none: the file system is
/// read-only) and so, with headers, what a `/dev/fuse` read needs room for.
pub(crate) const MAX_WRITE: u32 = 128 << 10;
/// Pages per READ (1 MiB): the kernel's default limit (`max_pages_limit`).
pub(crate) const MAX_PAGES: u16 = 256;
/// The kernel's page size, for the io_uring payload size.
const PAGE: usize = 4096;
/// A `/dev/fuse` read buffer: a request with the largest write and headers.
pub(crate) const DEV_BUFFER: usize = MAX_WRITE as usize + PAGE;
/// Requests queued in the kernel's background (readahead) queue.
const MAX_BACKGROUND: u16 = 64;

/// Writes one answer to `/dev/fuse`: `out` holds a header's room and the
/// answer's bytes. Errors the kernel gives for answers it no longer wants
/// (ENOENT: the request was interrupted) are ignored.
pub(crate) fn send(
    dev: &OwnedFd,
    unique: u64,
    answer: Answer,
    out: &mut Vec<u8>,
) -> Result<(), Errno> {
    let error = match answer {
        Answer::None => return Ok(()),
        Answer::Data => 0,
        Answer::Error(e) => {
            out.truncate(size_of::<OutHeader>());
            -e.raw_os_error()
        }
    };
    let header = OutHeader {
        len: (out.len() as u32).into(),
        error: error.into(),
        unique: unique.into(),
    };
    out[..size_of::<OutHeader>()].copy_from_slice(header.as_bytes());
    match rustix::io::write(dev, out) {
        Ok(_) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the handshake settled.
struct Negotiated {
    uring: bool,
}

/// Reads requests until INIT, answers it, and says whether io_uring was
/// taken. `Err` (after answering INIT with an error, so the mount fails
/// rather than hangs) when `Uring` was asked for and not offered.
fn handshake(
    fs: &CfsFs,
    dev: &OwnedFd,
    tuning: &Tuning,
    mount: &Path,
) -> Result<Negotiated, ServeFailed> {
    let failed = |op, source: Errno| ServeFailed::Session {
        op,
        mount: mount.to_path_buf(),
        source: source.into(),
    };
    let mut buf = vec![0u8; DEV_BUFFER];
    let mut out = Vec::with_capacity(128);
    loop {
        let n = match rustix::io::read(dev, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR | Errno::NOENT) => continue,
            Err(e) => return Err(failed("handshake on", e)),
        };
        let req = Request::from_dev(&buf[..n]).map_err(|e| ServeFailed::Session {
            op: "handshake on",
            mount: mount.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        out.clear();
        out.resize(size_of::<OutHeader>(), 0);
        let Op::Init {
            major,
            minor: _,
            max_readahead,
            flags: offers,
        } = req.op
        else {
            // Nothing but INIT comes first; answer anything else EIO.
            send(dev, req.unique(), Answer::Error(Errno::IO), &mut out)
                .map_err(|e| failed("handshake on", e))?;
            continue;
        };
        if major > abi::KERNEL_VERSION {
            // Newer kernel: say which major we speak, and it asks again.
            let ours = InitOut {
                major: abi::KERNEL_VERSION.into(),
                minor: abi::KERNEL_MINOR_VERSION.into(),
                ..Default::default()
            };
            out.extend_from_slice(ours.as_bytes());
            send(dev, req.unique(), Answer::Data, &mut out)
                .map_err(|e| failed("handshake on", e))?;
            continue;
        }
        if major < abi::KERNEL_VERSION {
            let _ = send(dev, req.unique(), Answer::Error(Errno::PROTO), &mut out);
            return Err(failed(
                "handshake on (FUSE protocol older than 7.x)",
                Errno::PROTO,
            ));
        }
        let offered = offers & init::OVER_IO_URING != 0;
        let uring = match tuning.fuse_transport {
            FuseTransport::Dev => false,
            FuseTransport::Auto => offered,
            FuseTransport::Uring if offered => true,
            FuseTransport::Uring => {
                let _ = send(dev, req.unique(), Answer::Error(Errno::PROTO), &mut out);
                return Err(ServeFailed::UringUnavailable {
                    mount: mount.to_path_buf(),
                    why: uring_absent_reason(),
                });
            }
        };
        let mut want = fs.init_flags(offers);
        if uring {
            want |= init::OVER_IO_URING;
        }
        let want = want | (init::INIT_EXT & offers);
        let answer = InitOut {
            major: abi::KERNEL_VERSION.into(),
            minor: abi::KERNEL_MINOR_VERSION.into(),
            max_readahead: max_readahead.into(),
            flags: (want as u32).into(),
            flags2: ((want >> 32) as u32).into(),
            max_background: MAX_BACKGROUND.into(),
            congestion_threshold: (MAX_BACKGROUND * 3 / 4).into(),
            max_write: MAX_WRITE.into(),
            time_gran: 1.into(),
            max_pages: MAX_PAGES.into(),
            max_stack_depth: u32::from(want & init::PASSTHROUGH != 0).into(),
            ..Default::default()
        };
        out.extend_from_slice(answer.as_bytes());
        send(dev, req.unique(), Answer::Data, &mut out).map_err(|e| failed("handshake on", e))?;
        return Ok(Negotiated { uring });
    }
}

/// Why the kernel offered no FUSE io_uring, as far as this process can tell.
fn uring_absent_reason() -> String {
    const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
    match std::fs::read_to_string(PARAM) {
        Ok(v) if v.trim() == "N" => format!(
            "the kernel did not offer it ({PARAM} is N; root can turn it on with `echo Y > {PARAM}`)"
        ),
        Ok(v) => format!("the kernel did not offer it ({PARAM} is {})", v.trim()),
        Err(_) => format!(
            "the kernel did not offer it (no {PARAM}: built without CONFIG_FUSE_IO_URING)"
        ),
    }
}

/// The `/dev/fuse` payload size io_uring entries need: the kernel refuses
/// entries smaller than its largest request or answer.
pub(crate) fn uring_payload_len() -> usize {
    (MAX_WRITE as usize)
        .max(usize::from(MAX_PAGES) * PAGE)
        .max(abi::MIN_READ_BUFFER)
}

/// Serves `fs` on `dev` until the connection ends; `ready` once INIT is answered.
pub(crate) fn serve(
    fs: CfsFs,
    dev: Arc<OwnedFd>,
    tuning: &Tuning,
    mount: &Path,
    ready: impl FnOnce(),
) -> Result<(), ServeFailed> {
    let negotiated = handshake(&fs, &dev, tuning, mount)?;
    let fs = Arc::new(fs);
    // /dev/fuse read by worker threads.
    let serve_dev = |ready: Box<dyn FnOnce() + '_>| {
        ready();
        let r = dev::serve(
            &fs,
            &dev,
            tuning.worker_threads().get(),
            tuning.spin(),
            None,
        );
        report(&fs, "transport=dev");
        r
    };
    let result = if negotiated.uring {
        match uring::Queues::start(&fs, &dev) {
            Ok(queues) => {
                ready();
                // FORGETs and INTERRUPTs only: no spinning for them.
                let r = dev::serve(&fs, &dev, 1, Duration::ZERO, Some(&queues));
                // The connection has ended: every request is answered. Report
                // before the queues hand their entries back, which may take
                // the kernel a moment (and a server whose namespace ended may
                // be made to exit meanwhile).
                let (uring, dev) = queues.counts();
                report(
                    &fs,
                    &format!("transport=uring uring_requests={uring} dev_requests={dev}"),
                );
                queues.finish();
                r
            }
            Err(e) if tuning.fuse_transport == FuseTransport::Uring => {
                return Err(ServeFailed::UringUnavailable {
                    mount: mount.to_path_buf(),
                    why: format!("could not set up the queues: {e}"),
                })
            }
            Err(e) => {
                // INIT said io_uring, but the kernel keeps using /dev/fuse
                // until every queue is registered: serve it there.
                eprintln!("cfs-fuse: FUSE over io_uring failed ({e}); serving /dev/fuse");
                serve_dev(Box::new(ready))
            }
        }
    } else {
        serve_dev(Box::new(ready))
    };
    result.map_err(|source| ServeFailed::Session {
        op: "serve",
        mount: mount.to_path_buf(),
        source,
    })
}

fn report(fs: &CfsFs, transport: &str) {
    if let Some(line) = fs.report(transport) {
        eprintln!("{line}");
    }
}
