//! What a hostile client could try.
