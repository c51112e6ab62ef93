//! Directory scanning: a live tree into a [`cfs_format::Tree`].
