//! Invariant: a dumpfile that parses can be written as an image, and reading
//! that image back and printing it is stable: print(read(write(parse(x)))) is a
//! fixed point of the same pipeline. Errors from parse or write are fine;
//! panics, and a round trip that changes, are bugs.
#![no_main]

use cfs_format::dumpfile::{parse, print, ParseMode};
use cfs_format::reader::Image;
use cfs_format::writer::{write_image, WriteOptions};
use libfuzzer_sys::fuzz_target;

fn cycle(text: &[u8]) -> Option<Vec<u8>> {
    let tree = parse(text, ParseMode::Lenient).ok()?;
    let image = write_image(&tree, &WriteOptions::default()).ok()?;
    let back = Image::open(&image[..])
        .and_then(|i| i.to_tree())
        .expect("an image we wrote must read back");
    let mut out = Vec::new();
    print(&back, &mut out).expect("print to memory");
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if let Some(first) = cycle(data) {
        let second = cycle(&first).expect("a printed dump must parse and write again");
        assert_eq!(first, second, "the dump changed on a second round trip");
    }
});
