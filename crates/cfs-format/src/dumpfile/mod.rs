//! The composefs dumpfile: one line per path, as `mkcomposefs --from-file`
//! reads it and `composefs-info dump` prints it.
