//! Writes a [`Tree`](crate::Tree) as a composefs EROFS image, byte for byte as C `mkcomposefs` does.
