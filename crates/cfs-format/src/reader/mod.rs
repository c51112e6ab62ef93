//! A zero-copy reader over composefs EROFS image bytes.
