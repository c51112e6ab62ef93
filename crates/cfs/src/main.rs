//! `cfs`: the command-line interface (also run as `mkcomposefs` and `composefs-info`).
fn main() {}
