//! What a hostile client could try against the service, each refused with
//! a reason (or, for objects it can't read, mounted but unreadable), while
//! the service keeps serving and its other mounts stay: requests are sent
//! from a thread of the test that is the test user (the service takes it
//! for that user: `SO_PEERCRED` is the connecting thread's), or by `cfs`
//! run as the user.

use super::{as_test_user, home, image_vars, run, run_ok, small_image, unavailable, Home, Service};
use cfs_mount::service::client::{Client, ServiceError};
use cfs_mount::service::protocol::{self, Request, Response};
use cfs_mount::service::ServiceVerity;
use cfs_testkit::require;
use cfs_testkit::users::As;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

pub(super) fn open(path: &Path, flags: OFlags) -> OwnedFd {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// The image at `path` as the service takes it: copied into a sealed memfd
/// (what `cfs mount` sends).
pub(super) fn sealed(path: &Path) -> OwnedFd {
    cfs_mount::service::client::sealed_copy(open(path, OFlags::RDONLY).as_fd(), path).unwrap()
}

pub(super) fn mount_request(objects: u32) -> Request {
    Request::Mount {
        objects,
        image_id: None,
        verity: ServiceVerity::Off,
    }
}

/// Sends `req` with `fds`; the refusal's text (panics on another answer).
fn refusal(svc: &Service, req: &Request, fds: &[BorrowedFd<'_>]) -> String {
    match Client::connect(&svc.socket(), Duration::from_secs(20)).and_then(|c| c.call(req, fds)) {
        Err(ServiceError::Refused(why)) => why,
        other => panic!("{req:?}: not refused: {other:?}"),
    }
}

/// A raw connection to the service.
fn raw(svc: &Service) -> OwnedFd {
    let s = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &s,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(20)),
    )
    .unwrap();
    rustix::net::connect(&s, &rustix::net::SocketAddrUnix::new(svc.socket()).unwrap()).unwrap();
    s
}

/// Sends raw bytes (and fds) as one message; the answer.
fn raw_answer(svc: &Service, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Response {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let s = raw(svc);
    let mut space = vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    sendmsg(
        &s,
        &[std::io::IoSlice::new(bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    protocol::recv::<Response>(&s).unwrap().0
}

fn refused_text(r: Response) -> String {
    match r {
        Response::Refused { error } => error,
        r => panic!("not refused: {r:?}"),
    }
}

/// A `sleep` running as the test user, killed when dropped.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn of_test_user() -> Sleeper {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = super::test_user_ids();
        let child = std::process::Command::new("sleep")
            .arg("600")
            .uid(uid)
            .gid(gid)
            .spawn()
            .expect("start sleep as the test user");
        Sleeper(child)
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The other mount, which every hostile request must leave alone: still
/// there, the same files.
fn assert_good_mount_intact(h: &Home, svc: &Service, listing: &str) {
    let now = run_ok(
        As::User,
        h,
        Some(svc),
        &[],
        "echo \"$(mountline good)\"; list good",
    );
    assert_eq!(now, listing, "the service's other mount changed");
}

#[test]
fn hostile_requests_are_refused_and_the_service_lives_on() {
    require!(unavailable());
    let h = home();
    let mut svc = Service::start(&["--request-timeout", "2"]);
    let (image, objects) = small_image(h.top());
    let vars = &image_vars(&image, &objects);
    // The mount that must survive everything below.
    let listing = run_ok(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir good mp mp2; ln -s mp link
           $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" good
           echo "$(mountline good)"; list good"#,
    );
    assert!(
        listing.starts_with("overlay composefs-service\n"),
        "{listing}"
    );

    // Hostile images, written where the user can read them.
    let bytes = std::fs::read(&image).unwrap();
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4096]);
    let mut upper = bytes.clone();
    let at = upper
        .windows(2)
        .position(|w| w[0] == b'/' && w[1].is_ascii_hexdigit())
        .map(|i| i + 5)
        .expect("a redirect in the image");
    upper[at] = b'G';
    let escaping = h.top().join("escaping.cfs");
    let dump = h.top().join("escaping.dump");
    std::fs::write(
        &dump,
        "/ 0 40755 2 0 0 0 0.0 - - -\n/shadow 1000 100644 1 0 0 0 0.0 ../../../../../../etc/shadow - -\n",
    )
    .unwrap();
    crate::cfs().ok([
        cfs_testkit::os("mkfs"),
        cfs_testkit::os("--from-file"),
        dump.as_os_str(),
        escaping.as_os_str(),
    ]);
    for (name, b) in [("longer.cfs", &longer), ("upper.cfs", &upper)] {
        std::fs::write(h.top().join(name), b).unwrap();
    }
    for name in ["longer.cfs", "upper.cfs", "escaping.cfs"] {
        super::chmod(&h.top().join(name), 0o644);
    }
    let rootdir = h.top().join("rootdir");
    std::fs::create_dir(&rootdir).unwrap();
    // A process of the user's: it owns /proc/PID, which a mount would cover
    // for every set-user-ID program that process executes.
    let sleeper = Sleeper::of_test_user();
    let own_proc = std::path::PathBuf::from(format!("/proc/{}", sleeper.0.id()));
    // A FUSE mount root may enter (allow_other): an unmount must not look a
    // name up in it (its server could hold every user's unmounts), and the
    // user's own mount, to name in such a request.
    let fuse = h.top().join("fuse");
    std::fs::create_dir(&fuse).unwrap();
    crate::cfs().ok([
        cfs_testkit::os("fuse-serve"),
        cfs_testkit::os("--basedir"),
        objects.as_os_str(),
        image.as_os_str(),
        fuse.as_os_str(),
    ]);
    let good_id = cfs_mount::identity::mount_id_at(
        open(&h.dir, OFlags::PATH | OFlags::DIRECTORY).as_fd(),
        OsStr::new("good"),
    )
    .unwrap()
    .to_string();

    let cases = as_test_user(|| {
        let img = || sealed(&image);
        let objs = || open(&objects, OFlags::PATH | OFlags::DIRECTORY);
        let mp = || {
            open(
                &h.dir.join("mp"),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            )
        };
        let mut out: Vec<(&str, String, &str)> = Vec::new();
        let mut case = |name, got: String, want| out.push((name, got, want));
        let mount = |image: &OwnedFd, mp: &OwnedFd, objs: &OwnedFd| {
            refusal(
                &svc,
                &mount_request(1),
                &[image.as_fd(), mp.as_fd(), objs.as_fd()],
            )
        };
        for (name, file, want) in [
            ("trailing bytes", "longer.cfs", "differs from byte"),
            ("a redirect in capitals", "upper.cfs", "not an object path"),
            (
                "a redirect out of the store",
                "escaping.cfs",
                "not an object path",
            ),
        ] {
            case(
                name,
                mount(&sealed(&h.top().join(file)), &mp(), &objs()),
                want,
            );
        }
        let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
        let (sock_a, _sock_b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let dir = open(&h.dir, OFlags::RDONLY | OFlags::DIRECTORY);
        case(
            "image: a directory",
            mount(&dir, &mp(), &objs()),
            "a directory, not a regular file",
        );
        case(
            "image: a pipe",
            mount(&pipe_r, &mp(), &objs()),
            "a FIFO, not a regular file",
        );
        case(
            "image: a socket",
            mount(&sock_a, &mp(), &objs()),
            "a socket, not a regular file",
        );
        case(
            "image: O_PATH",
            mount(&open(&image, OFlags::PATH), &mp(), &objs()),
            "opened O_PATH",
        );
        // A file could be on the user's own FUSE server (under an overlay,
        // where the FUSE check sees overlayfs), whose stalled read no
        // deadline interrupts; a memfd not sealed could change meanwhile.
        case(
            "image: a regular file",
            mount(&open(&image, OFlags::RDONLY), &mp(), &objs()),
            "not a memfd sealed against writing, growing and shrinking",
        );
        let unsealed: OwnedFd = rustix::fs::memfd_create(
            "image",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        std::io::Write::write_all(
            &mut std::fs::File::from(unsealed.try_clone().unwrap()),
            &std::fs::read(&image).unwrap(),
        )
        .unwrap();
        case(
            "image: a memfd not sealed",
            mount(&unsealed, &mp(), &objs()),
            "not a memfd sealed",
        );
        case(
            "mount point: root's",
            mount(
                &img(),
                &open(&rootdir, OFlags::PATH | OFlags::DIRECTORY),
                &objs(),
            ),
            "belongs to uid 0, not to you",
        );
        case(
            "mount point: a symlink swapped in",
            mount(
                &img(),
                &open(&h.dir.join("link"), OFlags::PATH | OFlags::NOFOLLOW),
                &objs(),
            ),
            "a symlink, not a directory",
        );
        case(
            "mount point: already mounted",
            mount(
                &img(),
                &open(&h.dir.join("good"), OFlags::PATH | OFlags::DIRECTORY),
                &objs(),
            ),
            "already has a file system",
        );
        case(
            "mount point: /proc/PID of the user's own process",
            mount(
                &img(),
                &open(&own_proc, OFlags::PATH | OFlags::DIRECTORY),
                &objs(),
            ),
            "(proc): the service mounts only on ordinary file systems",
        );
        case(
            "objects: a file",
            mount(&img(), &mp(), &img()),
            "not a directory",
        );
        case(
            "fds: one missing",
            refusal(&svc, &mount_request(1), &[img().as_fd(), mp().as_fd()]),
            "but 2 came",
        );
        case(
            "objects: none",
            refusal(&svc, &mount_request(0), &[img().as_fd(), mp().as_fd()]),
            "1 to 4 object directories",
        );
        case(
            "image id: another",
            refusal(
                &svc,
                &Request::Mount {
                    objects: 1,
                    image_id: Some("ab".repeat(32)),
                    verity: ServiceVerity::Off,
                },
                &[img().as_fd(), mp().as_fd(), objs().as_fd()],
            ),
            "not the abab",
        );
        case(
            "unmount: not the service's",
            refusal(
                &svc,
                &Request::Unmount {
                    name: b"mp".to_vec(),
                    mount_id: "u1".into(),
                    lazy: true,
                },
                &[dir.as_fd()],
            ),
            "not a mount the service made",
        );
        case(
            "unmount: a name in a FUSE directory",
            refusal(
                &svc,
                &Request::Unmount {
                    name: b"d".to_vec(),
                    mount_id: good_id.clone(),
                    lazy: false,
                },
                &[open(&fuse, OFlags::PATH | OFlags::DIRECTORY).as_fd()],
            ),
            "parent directory is on a FUSE file system",
        );
        for (name, bytes, want) in [
            ("message: not JSON", &b"\x00\xff garbage"[..], "malformed"),
            (
                "message: version 2",
                &br#"{"version":2,"op":"hello"}"#[..],
                "version 2",
            ),
            (
                "message: unknown op",
                &br#"{"version":1,"op":"format"}"#[..],
                "malformed",
            ),
            (
                "message: no version",
                &br#"{"op":"hello"}"#[..],
                "malformed",
            ),
        ] {
            case(name, refused_text(raw_answer(&svc, bytes, &[])), want);
        }
        let big = vec![b' '; protocol::MAX_MESSAGE + 100];
        case(
            "message: too long",
            refused_text(raw_answer(&svc, &big, &[])),
            "over 16384 bytes",
        );
        let many: Vec<BorrowedFd<'_>> = (0..12).map(|_| dir.as_fd()).collect();
        let hello = protocol::encode(&Request::Hello);
        case(
            "message: 12 fds",
            refused_text(raw_answer(&svc, &hello, &many)),
            "more than 8",
        );
        // Gone before asking; then silent: the service waits 2 s, no more,
        // and serves others meanwhile.
        drop(raw(&svc));
        let slow = raw(&svc);
        let start = Instant::now();
        let hello_ok = Client::connect(&svc.socket(), Duration::from_secs(5))
            .and_then(|c| c.call(&Request::Hello, &[]))
            .is_ok();
        case(
            "a slow client holds no one up",
            format!("{hello_ok} after {:?}", start.elapsed()),
            "true after",
        );
        let (answer, _) = protocol::recv::<Response>(&slow).unwrap();
        case(
            "a slow client",
            refused_text(answer),
            "no request within 2 s",
        );
        // Gone after asking: the mount is made (it was asked for), the
        // answer has no one to go to.
        let gone = raw(&svc);
        let mp2 = open(
            &h.dir.join("mp2"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        );
        protocol::send(
            &gone,
            &mount_request(1),
            &[img().as_fd(), mp2.as_fd(), objs().as_fd()],
        )
        .unwrap();
        drop(gone);
        out
    });
    let mut wrong = Vec::new();
    for (name, got, want) in &cases {
        if !got.contains(want) {
            wrong.push(format!("{name}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nservice log:\n{}",
        wrong.join("\n"),
        svc.log()
    );
    assert!(svc.alive(), "the service died:\n{}", svc.log());
    assert_good_mount_intact(&h, &svc, &listing);
    // Every refusal was logged with the user's uid.
    let (uid, _) = super::test_user_ids();
    let log = svc.log();
    assert!(
        log.matches(&format!("uid {uid} pid ")).count() >= cases.len(),
        "{log}"
    );
    assert!(
        log.contains("closed the connection without a request"),
        "{log}"
    );
    // The request of the client that went away was carried out.
    let mounted = cfs_testkit::mounts::wait_until(Duration::from_secs(20), || {
        !cfs_testkit::mounts::mounted_under(&h.dir.join("mp2")).is_empty()
    });
    assert!(mounted, "{}", svc.log());
    assert!(svc.alive(), "{}", svc.log());
    run_ok(
        As::User,
        &h,
        Some(&svc),
        &[],
        "$CFS unmount good; $CFS unmount mp2",
    );
}

#[test]
fn objects_the_user_cannot_read_stay_unreadable_through_the_mount() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let (image, objects) = small_image(h.top());
    // Root's copies of the objects: in a directory the user may pass
    // through but not into (0711 above 0700), and as root-only files in
    // directories it may read.
    let vault = h.top().join("vault");
    let secret = h.top().join("secret");
    for (dir, top, file) in [(&vault, 0o711, 0o644), (&secret, 0o755, 0o600)] {
        cfs_testkit::command::run_ok(std::process::Command::new("cp").args([
            cfs_testkit::os("-a"),
            objects.as_os_str(),
            dir.as_os_str(),
        ]));
        super::chmod(dir, top);
        cfs_testkit::command::run_ok(std::process::Command::new("find").args([
            dir.as_os_str(),
            cfs_testkit::os("-type"),
            cfs_testkit::os("f"),
            cfs_testkit::os("-exec"),
            cfs_testkit::os("chmod"),
            cfs_testkit::os(&format!("{file:o}")),
            cfs_testkit::os("{}"),
            cfs_testkit::os("+"),
        ]));
    }
    super::chmod(&vault.join("."), 0o711);
    // The vault's inside: root only.
    for sub in std::fs::read_dir(&vault).unwrap().flatten() {
        super::chmod(&sub.path(), 0o700);
    }
    let ext1 = cfs_testkit::walk::objects_in(&objects)
        .into_iter()
        .find(|p| std::fs::metadata(objects.join(p)).unwrap().len() == 300_000)
        .unwrap();
    let vars: &[(&str, &OsStr)] = &[
        ("IMAGE", image.as_os_str()),
        ("OBJECTS", objects.as_os_str()),
        ("VAULT", vault.as_os_str()),
        ("SECRET", secret.as_os_str()),
        ("EXT1", ext1.as_os_str()),
    ];
    // The user's own object directory, its ext1 object made to lead to the
    // root-only copy: a symlink, a hard link (made by root here: with
    // protected_hardlinks=0 the user could), and in a user namespace a
    // bind mount.
    let prepare = r#"
        mkdir -p linked/$(dirname $EXT1) hard/$(dirname $EXT1) bound/$(dirname $EXT1)
        ln -s "$SECRET/$EXT1" linked/$EXT1
        touch bound/$EXT1
    "#;
    run_ok(As::User, &h, Some(&svc), vars, prepare);
    std::fs::hard_link(secret.join(&ext1), h.dir.join("hard").join(&ext1)).unwrap();
    // READ when the bytes read through the mount are the object's (the
    // readable copy in $OBJECTS says what they are), else what went wrong.
    let read_through = |label: &str, basedir: &str| {
        format!(
            r#"mkdir -p m-{label}
               $CFS mount --fuse=no --basedir {basedir} "$IMAGE" m-{label}
               echo "{label} line: $(mountline m-{label})"
               if cat m-{label}/ext1 > got 2> err; then :; fi
               if cmp -s got "$OBJECTS/$EXT1"; then echo "{label}: READ"; else echo "{label}: $(cat err) ($(wc -c < got) bytes)"; fi
               echo "{label} inline: $(cat m-{label}/inline)"
            "#
        )
    };
    let mut script = String::new();
    for (label, basedir) in [
        ("vault", "\"$VAULT\""),
        ("secret", "\"$SECRET\""),
        ("linked", "linked"),
        ("hard", "hard"),
    ] {
        script.push_str(&read_through(label, basedir));
    }
    let out = run_ok(As::User, &h, Some(&svc), vars, &script);
    // Root reading through the user's mounts gets no more than the user.
    let as_root = run(
        As::Root,
        &h,
        Some(&svc),
        vars,
        "for m in vault secret linked hard; do if cat m-$m/ext1 2>/dev/null | cmp -s - \"$OBJECTS/$EXT1\"; then echo \"root $m: READ\"; fi; done; echo done",
    );
    let bound = run_ok(
        As::UserNs,
        &h,
        Some(&svc),
        vars,
        &format!(
            "mount --bind \"$SECRET/$EXT1\" bound/$EXT1\n{}",
            read_through("bound", "bound")
        ),
    );
    for label in ["vault", "secret", "linked", "hard"] {
        assert!(
            out.contains(&format!("{label} line: overlay composefs-service\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{label} inline: inline\n")), "{out}");
        assert!(
            !out.contains(&format!("{label}: READ")),
            "{label}: the user read root's object:\n{out}"
        );
        assert!(out.contains(&format!("{label}: cat: ")), "{out}");
    }
    assert!(
        bound.contains("bound line: overlay composefs-service\n"),
        "{bound}"
    );
    assert!(
        !bound.contains("bound: READ"),
        "read through a bind mount:\n{bound}"
    );
    let root_out = String::from_utf8_lossy(&as_root.stdout);
    assert_eq!(
        root_out, "done\n",
        "root read through the user's mount:\n{root_out}"
    );
    // The same image over readable objects reads (so the test can fail).
    let ok = run_ok(
        As::User,
        &h,
        Some(&svc),
        vars,
        "mkdir ok; $CFS mount --fuse=no --basedir \"$OBJECTS\" \"$IMAGE\" ok; head -c 300000 ok/ext1 | wc -c",
    );
    assert!(ok.ends_with("300000\n"), "{ok}");
}

#[test]
fn limits_per_user_hold() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[
        "--max-mounts-per-user",
        "1",
        "--max-requests-per-user",
        "1",
        "--request-timeout",
        "3",
    ]);
    let (image, objects) = small_image(h.top());
    let vars = &image_vars(&image, &objects);
    let out = run(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir a b
           $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" a
           $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" b"#,
    );
    let err = cfs_testkit::stderr(&out);
    assert!(err.contains("has 1 service mounts, the most"), "{err}");
    let busy = as_test_user(|| {
        let pending = raw(&svc);
        // The service counts the request in progress once it has taken the
        // connection: give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        let r = Client::connect(&svc.socket(), Duration::from_secs(5))
            .and_then(|c| c.call(&Request::Hello, &[]));
        drop(pending);
        r
    });
    match busy {
        Err(ServiceError::Refused(why)) => assert!(why.contains("requests in progress"), "{why}"),
        r => panic!("a second request in progress was not refused: {r:?}"),
    }
    run_ok(As::User, &h, Some(&svc), &[], "$CFS unmount a");
}
