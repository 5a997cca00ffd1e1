//! The io_uring backend: tokio-uring file operations. (Being written.)

use std::io;

/// Checks that an io_uring can be set up here.
pub fn probe() -> io::Result<()> {
    io_uring::IoUring::new(8).map(|_| ())
}
