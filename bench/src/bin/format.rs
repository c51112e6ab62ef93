//! Format benchmarks: dumpfile → image on the cs9 asset, and fs-verity hashing,
//! cfs beside the `composefs` crate (composefs-rs's library). Prints a markdown table.

use cfs_bench::{asset, median};
use composefs::fsverity::Sha256HashValue;
use std::time::Duration;

fn row(what: &str, cfs: Duration, peer: Duration, unit: &str, amount: f64) {
    let rate = |d: Duration| amount / d.as_secs_f64();
    println!(
        "| {what} | {:.1} ms ({:.0} {unit}) | {:.1} ms ({:.0} {unit}) | {:.2}× |",
        cfs.as_secs_f64() * 1e3,
        rate(cfs),
        peer.as_secs_f64() * 1e3,
        rate(peer),
        peer.as_secs_f64() / cfs.as_secs_f64()
    );
}

fn main() {
    // composefs-rs insists on `xx/hex` payloads with a digest: give both tools
    // the same dump with the cs9 `.file` payloads rewritten that way.
    let dump = canonical_payloads(&asset("cs9-x86_64-minimal.dump.gz"));
    let text = std::str::from_utf8(&dump).expect("utf-8 dump");
    let lines = text.lines().count() as f64;
    println!("| job | cfs | composefs crate 0.9.4 | cfs speed-up |");
    println!("|---|---|---|---|");

    let parse = || cfs_format::dumpfile::parse(&dump, Default::default()).expect("parse");
    let tree = parse();
    let ours = median(10, || {
        cfs_format::writer::write_image(&parse(), &Default::default()).expect("write")
    });
    let theirs = median(10, || {
        let fs = composefs::dumpfile::dumpfile_to_validated_filesystem::<Sha256HashValue>(text)
            .expect("parse");
        composefs::erofs::writer::mkfs_erofs(&fs)
    });
    row(
        "cs9 dumpfile → image (parse + write)",
        ours,
        theirs,
        "lines/s",
        lines,
    );

    let ours = median(10, || {
        cfs_format::writer::write_image(&tree, &Default::default())
    });
    let fs = composefs::dumpfile::dumpfile_to_validated_filesystem::<Sha256HashValue>(text)
        .expect("parse");
    let theirs = median(10, || composefs::erofs::writer::mkfs_erofs(&fs));
    row("cs9 image write only", ours, theirs, "inodes/s", lines);

    let data: Vec<u8> = (0..256u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let mib = data.len() as f64 / (1 << 20) as f64;
    let ours = median(5, || cfs_format::fsverity::digest(&data));
    let theirs = median(5, || {
        composefs::fsverity::compute_verity::<Sha256HashValue>(&data)
    });
    row(
        "fs-verity digest of 256 MiB (one core)",
        ours,
        theirs,
        "MiB/s",
        mib,
    );
}

/// Rewrites `xx/hex.file` payloads of regular files to `xx/hex` with the digest field set.
fn canonical_payloads(dump: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(dump).expect("utf-8 dump");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        let mut f: Vec<String> = line.split(' ').map(str::to_string).collect();
        let regular = u32::from_str_radix(f.get(2).map_or("", String::as_str), 8)
            .is_ok_and(|m| m & 0o170000 == 0o100000);
        if f.len() > 10 && regular && f[8] != "-" && f[10] == "-" {
            let path = f[8].trim_end_matches(".file").to_string();
            f[10] = path.replace('/', "");
            f[8] = path;
        }
        out.push_str(&f.join(" "));
        out.push('\n');
    }
    out.into_bytes()
}
