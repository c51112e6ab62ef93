//! Shared helpers for the benchmark binaries: timing and table printing.

use std::time::{Duration, Instant};

/// Runs `f` `runs` times after one warm-up run; returns the median duration.
pub fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    std::hint::black_box(f());
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Path of the conformance set beside the checkout.
pub fn conformance() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

/// Reads a conformance asset, gunzipping it if needed.
pub fn asset(name: &str) -> Vec<u8> {
    use std::io::Read;
    let raw = std::fs::read(conformance().join("assets").join(name)).expect("asset");
    if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    } else {
        raw
    }
}
