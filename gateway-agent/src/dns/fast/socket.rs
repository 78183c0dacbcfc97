//! The fast path's sockets: one `SO_REUSEPORT` UDP socket per core on the same address and
//! port, each read by a thread of its own in batches with `recvmmsg` and answered in batches
//! with `sendmmsg`. A thread never waits for the runtime: misses are spawned onto it and reply
//! on the same socket when done.
//!
//! When the agent may use CPUs 0..n (n sockets), a classic BPF program on the group hands each
//! datagram to the socket of the CPU that received it, and thread i runs on CPU i: a question
//! is read, answered and its reply delivered on the core where it arrived, without waking a
//! thread elsewhere (the kernel's flow hash, the fallback, put 3 of dnsperf's 4 flows on one
//! socket).

use std::io;
use std::mem::zeroed;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::runtime::Handle;

use super::{FastPath, Outcome};
use crate::dns::MAX_UDP_PAYLOAD;

/// Datagrams read or sent per system call at most.
const BATCH: usize = 32;
/// Room for a request; longer ones are cut short by the kernel and dropped.
const REQUEST_ROOM: usize = 4096;
const REPLY_ROOM: usize = MAX_UDP_PAYLOAD as usize;
/// How often an idle thread looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Threads (and sockets) at most, whatever the core count.
const MAX_THREADS: usize = 8;

/// The number of sockets to serve with: one per core the agent may use.
pub(crate) fn thread_count() -> usize {
    contiguous_cpus()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h, which x86 and arm use; the libc crate
/// has it only for some targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// The CPUs the agent may run on, if they are 0..n for some n (else `None`: no pinning).
pub(crate) fn contiguous_cpus() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return None;
    }
    // SAFETY: CPU_COUNT and CPU_ISSET only read the set.
    let count = usize::try_from(unsafe { libc::CPU_COUNT(&set) }).ok()?;
    (0..count)
        // SAFETY: as above.
        .all(|cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .then_some(count)
}

/// Steers each datagram to socket `cpu % count` of `group`'s reuseport group (sockets are
/// numbered in bind order).
fn steer_by_cpu(group: &Socket, count: usize) -> io::Result<()> {
    let mut code = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: u32::try_from(count).unwrap_or(1),
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let program = libc::sock_fprog {
        len: code.len() as libc::c_ushort,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: a valid fd, and a sock_fprog pointing at `code` for the call (the kernel copies
    // the program).
    let rc = unsafe {
        libc::setsockopt(
            group.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&program as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs the calling thread on `cpu` only.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: CPU_SET writes within the set (`cpu` is below the CPU count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A UDP socket on `addr` that shares the port with the others of its group.
pub(crate) fn bind_udp(addr: SocketAddrV4) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    // Blocking reads that give up now and then, so the thread notices a stop.
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

/// The threads reading the sockets; dropping them asks them to stop, [`Workers::stop`] waits.
pub(crate) struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// A thread for each socket, answering through `fast`, misses on `runtime`.
    pub fn spawn(sockets: Vec<Socket>, fast: Arc<FastPath>, runtime: Handle) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Workers {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let count = sockets.len();
        let steered = count > 1
            && contiguous_cpus() == Some(count)
            && match steer_by_cpu(&sockets[0], count) {
                Ok(()) => true,
                Err(err) => {
                    tracing::debug!(error = %err, "DNS sockets stay on the kernel's flow hash");
                    false
                }
            };
        for (i, socket) in sockets.into_iter().enumerate() {
            let (fast, runtime, stop) = (fast.clone(), runtime.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || {
                    if steered {
                        if let Err(err) = pin_to(i) {
                            tracing::debug!(error = %err, cpu = i, "a DNS thread is not pinned");
                        }
                    }
                    serve(Arc::new(socket), &fast, &runtime, &stop)
                })
                .context("starting a DNS socket thread")?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops the threads and waits for them (a read gives up within [`STOP_POLL`]); the
    /// sockets close with them.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if joined.await.is_err() {
            tracing::warn!("a DNS socket thread panicked");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Buffers for one batch: requests in, replies out, and the addresses of both.
struct Batch {
    requests: Vec<u8>,
    request_lens: [usize; BATCH],
    from: [libc::sockaddr_in; BATCH],
    replies: Vec<u8>,
    reply_lens: [usize; BATCH],
    to: [libc::sockaddr_in; BATCH],
}

fn serve(socket: Arc<Socket>, fast: &Arc<FastPath>, runtime: &Handle, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut batch = Box::new(Batch {
        requests: vec![0; BATCH * REQUEST_ROOM],
        request_lens: [0; BATCH],
        // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
        from: unsafe { zeroed() },
        replies: vec![0; BATCH * REPLY_ROOM],
        reply_lens: [0; BATCH],
        // SAFETY: as above.
        to: unsafe { zeroed() },
    });
    while !stop.load(Ordering::Acquire) {
        let received = match recv_batch(fd, &mut batch) {
            Ok(n) => n,
            Err(err) => {
                if !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(error = %err, "reading DNS datagrams failed");
                    // Not a busy loop on a persistent error.
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        let now = Instant::now();
        let mut replies = 0;
        for i in 0..received {
            let len = batch.request_lens[i];
            if len > REQUEST_ROOM || i32::from(batch.from[i].sin_family) != libc::AF_INET {
                continue;
            }
            let client = batch.from[i];
            let src = SocketAddr::V4(v4(&client));
            let msg = &batch.requests[i * REQUEST_ROOM..i * REQUEST_ROOM + len];
            let out = &mut batch.replies[replies * REPLY_ROOM..(replies + 1) * REPLY_ROOM];
            match fast.answer(msg, src, now, out) {
                Outcome::Answered(n) => {
                    batch.reply_lens[replies] = n;
                    batch.to[replies] = client;
                    replies += 1;
                }
                Outcome::Slow(admission) => {
                    let Some(slot) = fast.slow_slot() else {
                        continue;
                    };
                    let (msg, fast, socket) = (msg.to_vec(), fast.clone(), socket.clone());
                    runtime.spawn(async move {
                        let _slot = slot;
                        if let Some(reply) = fast.slow(msg, src, admission, now).await {
                            let to = SockAddr::from(src);
                            if let Err(err) =
                                socket.send_to_with_flags(&reply, &to, libc::MSG_DONTWAIT)
                            {
                                tracing::debug!(error = %err, "sending a DNS reply failed");
                            }
                        }
                    });
                }
            }
        }
        send_batch(fd, &mut batch, replies);
    }
}

/// Reads up to [`BATCH`] datagrams, waiting for the first; their lengths (beyond
/// [`REQUEST_ROOM`]: cut short) and senders are in `batch`.
fn recv_batch(fd: RawFd, batch: &mut Batch) -> io::Result<usize> {
    // SAFETY: plain C structs; zeroed is a valid initial value for each.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    let base = batch.requests.as_mut_ptr();
    for i in 0..BATCH {
        iovs[i] = libc::iovec {
            // SAFETY: `i * REQUEST_ROOM` stays within the BATCH * REQUEST_ROOM bytes.
            iov_base: unsafe { base.add(i * REQUEST_ROOM) }.cast(),
            iov_len: REQUEST_ROOM,
        };
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (&mut batch.from[i] as *mut libc::sockaddr_in).cast();
        header.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        header.msg_iov = &mut iovs[i];
        header.msg_iovlen = 1;
    }
    // SAFETY: every header points at live buffers of the sizes it gives, for the call.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            headers.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let received = rc as usize;
    for (i, header) in headers.iter().enumerate().take(received) {
        batch.request_lens[i] = if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            usize::MAX
        } else {
            header.msg_len as usize
        };
    }
    Ok(received)
}

/// Sends the first `count` replies of `batch`; one that fails is dropped (the client asks
/// again), the rest still go.
fn send_batch(fd: RawFd, batch: &mut Batch, count: usize) {
    if count == 0 {
        return;
    }
    // SAFETY: plain C structs; zeroed is a valid initial value for each.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    // SAFETY: as above.
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    let base = batch.replies.as_mut_ptr();
    for i in 0..count {
        iovs[i] = libc::iovec {
            // SAFETY: `i * REPLY_ROOM` stays within the BATCH * REPLY_ROOM bytes.
            iov_base: unsafe { base.add(i * REPLY_ROOM) }.cast(),
            iov_len: batch.reply_lens[i],
        };
        let header = &mut headers[i].msg_hdr;
        header.msg_name = (&mut batch.to[i] as *mut libc::sockaddr_in).cast();
        header.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        header.msg_iov = &mut iovs[i];
        header.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < count {
        // SAFETY: headers[sent..count] point at live buffers of the sizes they give.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                headers[sent..].as_mut_ptr(),
                (count - sent) as libc::c_uint,
                0,
            )
        };
        if rc > 0 {
            sent += rc as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        if rc < 0 && err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        tracing::debug!(error = %err, "sending a DNS reply failed");
        sent += 1;
    }
}

fn v4(addr: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    )
}
