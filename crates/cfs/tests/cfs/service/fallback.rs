//! Where the service is not, or says no, `cfs mount` mounts with FUSE as
//! it always did; `--fuse=yes` never asks the service.
