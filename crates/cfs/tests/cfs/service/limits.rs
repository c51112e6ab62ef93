//! The service's limits against a client that would stretch them: a user
//! running clients as its subordinate uids is still one user; parallel
//! mounts can't all pass the mount limit; parallel requests with large
//! images hold at most `--max-validations` images in memory; and a record
//! of a mount gone (a pin from another boot, whose mount id the kernel has
//! given to another mount since) unmounts nothing.

use super::hostile::{mount_request, open};
use super::{
    as_test_user, home, image_vars, run_ok, small_image, test_user_ids, unavailable, Service,
};
use cfs_mount::service::client::{Client, ServiceError};
use cfs_mount::service::protocol::Request;
use cfs_testkit::require;
use cfs_testkit::users::{subordinate_ids, As};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::OFlags;
use std::time::Duration;

/// A client that connects and says nothing, holding a request slot (perl,
/// which Debian always has, speaks `SOCK_SEQPACKET`), and one that asks
/// `hello` and prints the answer.
const CLIENTS: &str = r#"
hold() {
    setpriv --reuid "$1" --regid "$1" --clear-groups perl -MSocket -e '
        socket(my $s, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!";
        connect($s, pack_sockaddr_un($ENV{CFS_MOUNT_SERVICE})) or die "connect: $!";
        sleep 60' &
}
hello() {
    setpriv --reuid "$1" --regid "$1" --clear-groups perl -MSocket -e '
        socket(my $s, AF_UNIX, SOCK_SEQPACKET, 0) or die "socket: $!";
        connect($s, pack_sockaddr_un($ENV{CFS_MOUNT_SERVICE})) or die "connect: $!";
        $SIG{PIPE} = "IGNORE";
        # A refusal may come, and the connection close, before the request
        # is sent: the answer is read all the same.
        send($s, q({"version":1,"op":"hello"}), 0);
        defined(recv($s, my $answer, 65536, 0)) or die "recv: $!";
        print "$answer\n"'
}
"#;

#[test]
fn a_user_with_subordinate_ids_is_one_user_to_the_limits() {
    require!(unavailable());
    let (Some(uids), Some(gids)) = (
        subordinate_ids("/etc/subuid"),
        subordinate_ids("/etc/subgid"),
    ) else {
        println!("skipped: the test user has no subordinate ids in /etc/subuid and /etc/subgid");
        return;
    };
    let h = home();
    let svc = Service::start(&[
        "--max-requests-per-user",
        "2",
        "--max-mounts-per-user",
        "1",
        "--request-timeout",
        "30",
    ]);
    let (image, objects) = small_image(h.top());
    let vars = &image_vars(&image, &objects);
    // In the user's namespace with its subordinate ids: two clients as ids
    // 1 and 2 (subordinate uids in the kernel) hold the user's two request
    // slots; a third, as id 3, is the same user. Then a mount as the
    // namespace's root (the user's own uid) takes the user's one mount,
    // and a mount as id 5 is the same user's second.
    let script = format!(
        r#"{CLIENTS}
        hold 1; p1=$!; hold 2; p2=$!
        sleep 1
        echo "hello: $(hello 3)"
        kill $p1 $p2; wait $p1 $p2 || true
        mkdir a b; chown 5:5 b
        $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" a
        if setpriv --reuid 5 --regid 5 --clear-groups $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" b 2>err
        then echo "b: mounted"; else echo "b: $(cat err)"; fi
        echo "a: $(mountline a)""#
    );
    let out = run_ok(
        As::UserNsAllIds { uids, gids },
        &h,
        Some(&svc),
        vars,
        &script,
    );
    let (uid, _) = test_user_ids();
    let log = svc.log();
    assert!(
        out.contains("hello: {\"version\":1,\"result\":\"refused\"")
            && out.contains(&format!("uid {uid} has 2 requests in progress")),
        "a subordinate uid got requests of its own:\n{out}\nservice log:\n{log}"
    );
    assert!(
        out.contains("a: overlay composefs-service\n"),
        "{out}\n{log}"
    );
    assert!(
        out.contains("b: ") && out.contains(&format!("uid {uid} has 1 service mounts")),
        "a subordinate uid got mounts of its own:\n{out}\nservice log:\n{log}"
    );
    // The log names the user, and the uid the client ran as.
    assert!(
        log.contains(&format!("uid {uid} (as uid {}) pid ", uids.0 + 4)),
        "{log}"
    );
}

#[test]
fn parallel_mounts_stay_within_the_mount_limit() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&["--max-mounts-per-user", "1"]);
    let (image, objects) = small_image(h.top());
    let vars = &image_vars(&image, &objects);
    let out = run_ok(
        As::User,
        &h,
        Some(&svc),
        vars,
        r#"mkdir a b c d
           for d in a b c d; do
               $CFS mount --fuse=no --basedir "$OBJECTS" "$IMAGE" $d 2>err-$d &
           done
           wait
           for d in a b c d; do echo "$d: $(mountline $d) $(cat err-$d)"; done
           for d in a b c d; do
               if [ -n "$(mountline $d)" ]; then $CFS unmount $d; fi
           done"#,
    );
    let mounted = out.matches("overlay composefs-service").count();
    assert_eq!(mounted, 1, "{out}\nservice log:\n{}", svc.log());
    assert_eq!(
        out.matches("the most the service makes for one user")
            .count(),
        3,
        "{out}"
    );
}

/// The peak memory (`VmHWM`) and the present memory of process `pid`, in
/// bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn parallel_requests_hold_at_most_max_validations_images() {
    require!(unavailable());
    const IMAGE_BYTES: u64 = 64 << 20;
    const REQUESTS: usize = 8;
    let h = home();
    let mut svc = Service::start(&[
        "--max-image-bytes",
        &IMAGE_BYTES.to_string(),
        "--max-validations",
        "1",
        "--max-requests-per-user",
        &REQUESTS.to_string(),
    ]);
    let (_, objects) = small_image(h.top());
    run_ok(As::User, &h, Some(&svc), &[], "mkdir mp");
    let (_, before) = memory_of(svc.child.id());
    // Sparse images of the largest size: the client's memory costs
    // nothing; the service's copy of each is IMAGE_BYTES.
    let answers = as_test_user(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..REQUESTS)
                .map(|_| {
                    s.spawn(|| {
                        use rustix::fs::{MemfdFlags, SealFlags};
                        let memfd: OwnedFd = rustix::fs::memfd_create(
                            "big",
                            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
                        )
                        .unwrap();
                        rustix::fs::ftruncate(&memfd, IMAGE_BYTES).unwrap();
                        rustix::fs::fcntl_add_seals(
                            &memfd,
                            SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK,
                        )
                        .unwrap();
                        let mp = open(
                            &h.dir.join("mp"),
                            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                        );
                        let objs = open(&objects, OFlags::PATH | OFlags::DIRECTORY);
                        Client::connect(&svc.socket(), Duration::from_secs(60)).and_then(|c| {
                            c.call(
                                &mount_request(1),
                                &[memfd.as_fd(), mp.as_fd(), objs.as_fd()],
                            )
                        })
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    for a in &answers {
        match a {
            Err(ServiceError::Refused(why)) if why.contains("the image") => {}
            a => panic!("a zero image was not refused: {a:?}\n{}", svc.log()),
        }
    }
    let (peak, _) = memory_of(svc.child.id());
    assert!(svc.alive(), "{}", svc.log());
    // One image at a time (and what validating it takes); not eight.
    assert!(
        peak < before + 5 * IMAGE_BYTES / 2,
        "the service's peak memory was {} MiB, from {} MiB before {REQUESTS} requests of \
         {} MiB images with --max-validations 1",
        peak >> 20,
        before >> 20,
        IMAGE_BYTES >> 20
    );
}

#[test]
fn a_pin_of_a_mount_gone_unmounts_nothing() {
    require!(unavailable());
    let h = home();
    let svc = Service::start(&[]);
    let (uid, _) = test_user_ids();
    // A mount root made in the user's directory (the user may not unmount
    // it), and a pin from another boot that names its mount id, as if the
    // service had made a mount of that id for the user then.
    let victim = h.dir.join("victim");
    std::fs::create_dir(&victim).unwrap();
    cfs_testkit::command::run_ok(std::process::Command::new("mount").args([
        cfs_testkit::os("-t"),
        cfs_testkit::os("tmpfs"),
        cfs_testkit::os("cfs-test-victim"),
        victim.as_os_str(),
    ]));
    let id = cfs_repo::sys::mount_at(&victim).unwrap();
    let pins = svc.cache().join("pins");
    std::fs::create_dir_all(&pins).unwrap();
    std::fs::write(
        pins.join(format!("{}-{}", id.mnt_ns_id, id.mnt_id)),
        format!(
            "image {}\nmnt_ns_id {}\nmnt_id {}\nboot 00000000-0000-0000-0000-000000000000\n\
             owner {uid}\nmountpoint {}\n",
            "ab".repeat(32),
            id.mnt_ns_id,
            id.mnt_id,
            victim.display()
        ),
    )
    .unwrap();
    let answer = as_test_user(|| {
        let parent = open(&h.dir, OFlags::PATH | OFlags::DIRECTORY);
        Client::connect(&svc.socket(), Duration::from_secs(20)).and_then(|c| {
            c.call(
                &Request::Unmount {
                    name: b"victim".to_vec(),
                    mount_id: format!("u{}", id.mnt_id),
                    lazy: true,
                },
                &[parent.as_fd()],
            )
        })
    });
    let still = cfs_repo::sys::mount_at(&victim).ok();
    assert_eq!(
        still,
        Some(id),
        "root's mount was unmounted for the user (answer {answer:?})"
    );
    match answer {
        Err(ServiceError::Refused(why)) => {
            assert!(why.contains("not a mount the service made"), "{why}")
        }
        a => panic!("not refused: {a:?}\n{}", svc.log()),
    }
}
