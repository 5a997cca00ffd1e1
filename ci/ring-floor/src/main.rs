//! The floor of a one-connection round trip (W5) for a server with its own io_uring loop.
//!
//! One thread, one ring. Accepts and receives through the ring; answers each RESP command
//! with a fixed reply (`$-1` to a two-argument command such as GET, `+OK` to a
//! three-argument one such as SET, `+PONG` to one argument) written with a direct
//! non-blocking send; waits with one `io_uring_enter` that submits and waits together.
//! It stores nothing and parses no more than the command's argument count, so it measures
//! the loop and the kernel, not a store.
//!
//! `ring-floor ADDR`; `RING_FLOOR_DEFER=1` sets the ring up with
//! `IORING_SETUP_DEFER_TASKRUN` (completions run when the loop asks for them, not as task
//! work that interrupts its wait), otherwise with `IORING_SETUP_COOP_TASKRUN`, as kvs-server
//! does through tokio-uring.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const ACCEPT: u64 = u64::MAX;
const BUF_BYTES: usize = 64 * 1024;

/// A connection: its socket and the buffer its pending receive writes into.
struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
}

fn push(ring: &mut IoUring, sqe: &squeue::Entry) {
    #[expect(
        unsafe_code,
        reason = "io_uring reads and writes the buffers an entry names"
    )]
    // SAFETY: an accept entry names no buffer; a receive entry names a connection's boxed
    // buffer, which is neither moved nor freed until its completion has been reaped (the
    // connection is removed from the map only on that completion). The ring has room: each
    // connection has at most one entry in flight, and the queue is submitted every turn.
    unsafe {
        ring.submission().push(sqe).expect("submission queue full");
    }
}

fn recv_entry(fd: i32, c: &mut Conn) -> squeue::Entry {
    opcode::Recv::new(types::Fd(fd), c.buf.as_mut_ptr(), c.buf.len() as u32)
        .build()
        .user_data(fd as u64)
}

fn main() {
    let addr = std::env::args().nth(1).expect("usage: ring-floor ADDR");
    let listener = TcpListener::bind(&addr).expect("bind");
    let mut builder = IoUring::builder();
    if std::env::var_os("RING_FLOOR_DEFER").is_some() {
        builder.setup_single_issuer().setup_defer_taskrun();
    } else {
        builder.setup_coop_taskrun();
    }
    let mut ring = builder.build(256).expect("io_uring setup");
    let lfd = types::Fd(listener.as_raw_fd());
    let accept = opcode::Accept::new(lfd, std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept);
    let mut conns: HashMap<i32, Conn> = HashMap::new();
    let mut out = Vec::new();
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c: cqueue::Entry| (c.user_data(), c.result()))
            .collect();
        for (what, res) in done {
            if what == ACCEPT {
                push(&mut ring, &accept);
                if res < 0 {
                    continue;
                }
                #[expect(unsafe_code, reason = "adopting the descriptor accept returned")]
                // SAFETY: `res` is a new socket descriptor that the accept completion handed
                // over and nothing else owns.
                let stream = unsafe { TcpStream::from_raw_fd(res) };
                stream.set_nodelay(true).expect("TCP_NODELAY");
                stream.set_nonblocking(true).expect("O_NONBLOCK");
                let mut c = Conn {
                    stream,
                    buf: vec![0; BUF_BYTES].into_boxed_slice(),
                };
                push(&mut ring, &recv_entry(res, &mut c));
                conns.insert(res, c);
                continue;
            }
            let fd = what as i32;
            if res <= 0 {
                conns.remove(&fd);
                continue;
            }
            let c = conns
                .get_mut(&fd)
                .expect("a connection with a receive in flight");
            out.clear();
            for w in c.buf[..res as usize].windows(4) {
                match w {
                    b"*2\r\n" => out.extend_from_slice(b"$-1\r\n"),
                    b"*3\r\n" => out.extend_from_slice(b"+OK\r\n"),
                    b"*1\r\n" => out.extend_from_slice(b"+PONG\r\n"),
                    _ => {}
                }
            }
            // One command per read at pipeline depth 1: the reply fits the socket's buffer.
            let _ = c.stream.write(&out);
            let next = recv_entry(fd, c);
            push(&mut ring, &next);
        }
    }
}
