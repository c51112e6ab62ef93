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
    let dump = asset("cs9-x86_64-minimal.dump.gz");
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
    row("cs9 dumpfile → image (parse + write)", ours, theirs, "lines/s", lines);

    let ours = median(10, || cfs_format::writer::write_image(&tree, &Default::default()));
    let fs = composefs::dumpfile::dumpfile_to_validated_filesystem::<Sha256HashValue>(text)
        .expect("parse");
    let theirs = median(10, || composefs::erofs::writer::mkfs_erofs(&fs));
    row("cs9 image write only", ours, theirs, "inodes/s", lines);

    let data: Vec<u8> = (0..256u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let mib = data.len() as f64 / (1 << 20) as f64;
    let ours = median(5, || cfs_format::fsverity::digest(&data));
    let theirs = median(5, || composefs::fsverity::compute_verity::<Sha256HashValue>(&data));
    row("fs-verity digest of 256 MiB (one core)", ours, theirs, "MiB/s", mib);
}
