//! An image may claim setuid-root files and device nodes; through the
//! service they gain the user nothing.
