//! The blocking backend: positional syscalls on a thread pool. (Being written.)
