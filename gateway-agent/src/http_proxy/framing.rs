//! Framing hyper accepts and the proxy refuses: `Content-Length` together with
//! `Transfer-Encoding`, and more than one `Content-Length` (even equal ones, or a list).
//!
//! hyper reads such a head one consistent way (Transfer-Encoding wins; equal lengths are one
//! length; RFC 9112 §6.1 and §6.3 allow both) and removes the evidence from the header map, so
//! the request the proxy gets looks clean. But request smuggling lives in the difference
//! between two parsers' readings, and a proxy is the first of the two: the issue's rule is 400
//! and close. So [`Scanned`] watches the bytes hyper reads from the client, parses each head
//! with the same parser (httparse) and follows each message's framing the way hyper does to find
//! the next head. It notes the first ambiguous head in [`Verdicts`]; the request handler asks
//! it for every request hyper hands over, in order, and answers the ambiguous one with 400 and
//! `Connection: close`.
//!
//! Where the scanner cannot follow, it stops and hyper's own checks are all that apply: a head
//! it cannot parse or a body framing it does not know (hyper refuses those too, and the
//! connection ends), and CONNECT (the connection becomes a tunnel; a refused CONNECT closes
//! it, `forward::handle`).

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header slots for a head (hyper allows 100; a head with more is refused there).
const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line followed; a longer one stops the scanner.
const MAX_LINE: usize = 4096;

/// The first ambiguous head on one connection, and how many requests were answered.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// (index of the head on the connection, why).
    ambiguous: Mutex<Option<(u64, &'static str)>>,
    requests: AtomicU64,
}

impl Verdicts {
    fn record(&self, head: u64, why: &'static str) {
        let mut ambiguous = self
            .ambiguous
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ambiguous.get_or_insert((head, why));
    }

    /// For each request hyper hands over, in order: why its framing is refused, if it is.
    /// hyper parses a head only from bytes it read through [`Scanned`], so the scanner has
    /// judged a request's head before the request reaches the handler.
    pub fn next_request(&self) -> Option<&'static str> {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        let ambiguous = self
            .ambiguous
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *ambiguous {
            Some((head, why)) if head == index => Some(why),
            _ => None,
        }
    }
}

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a `Content-Length` body: bytes left.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left.
    ChunkData(u64),
    /// Collecting the CRLF after a chunk.
    ChunkEnd,
    /// Collecting trailer lines, up to the empty one.
    Trailers,
    /// Not following any more.
    Stopped,
}

/// Follows a client's requests through their framing and judges each head.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The head or line being collected.
    pending: Vec<u8>,
    /// Heads judged so far.
    heads: u64,
    max_head: usize,
    verdicts: Arc<Verdicts>,
}

/// What one head says about the body after it.
enum Next {
    State(State),
    Ambiguous(&'static str),
}

impl Scanner {
    /// A scanner for one connection whose heads may be `max_head` bytes long.
    pub fn new(max_head: usize, verdicts: Arc<Verdicts>) -> Self {
        Scanner {
            state: State::Head,
            pending: Vec::new(),
            heads: 0,
            max_head,
            verdicts,
        }
    }

    /// Whether it has stopped following (it then costs nothing).
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The next bytes the client sent, in order.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match self.state {
                State::Stopped => return,
                State::Body(left) => {
                    let (rest, left) = skip(data, left);
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    rest
                }
                State::ChunkData(left) => {
                    let (rest, left) = skip(data, left);
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    rest
                }
                State::Head => self.head(data),
                State::ChunkSize | State::ChunkEnd | State::Trailers => self.line(data),
            };
        }
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.pending = Vec::new();
    }

    fn head<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let before = self.pending.len();
        let room = (self.max_head + 1).saturating_sub(before);
        self.pending
            .extend_from_slice(&data[..data.len().min(room)]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (length, next) = match request.parse(&self.pending) {
            Ok(httparse::Status::Complete(length)) => (length, judge(&request)),
            Ok(httparse::Status::Partial) if self.pending.len() <= self.max_head => return &[],
            // Too long, too many headers, or not HTTP: hyper refuses it too.
            Ok(httparse::Status::Partial) | Err(_) => {
                self.stop();
                return &[];
            }
        };
        let head = self.heads;
        self.heads += 1;
        self.pending.clear();
        match next {
            Next::State(state) => self.state = state,
            Next::Ambiguous(why) => {
                self.verdicts.record(head, why);
                self.stop();
                return &[];
            }
        }
        // The head ended `length - before` bytes into `data`.
        data.get(length.saturating_sub(before)..)
            .unwrap_or_default()
    }

    fn line<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let (taken, complete) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (&data[..=i], true),
            None => (data, false),
        };
        if self.pending.len() + taken.len() > MAX_LINE {
            self.stop();
            return &[];
        }
        self.pending.extend_from_slice(taken);
        let rest = &data[taken.len()..];
        if !complete {
            return rest;
        }
        let line = std::mem::take(&mut self.pending);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.state = match self.state {
            State::ChunkSize => match chunk_size(line) {
                Some(0) => State::Trailers,
                Some(size) => State::ChunkData(size),
                None => State::Stopped,
            },
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Stopped,
        };
        rest
    }
}

/// Skips up to `left` bytes of `data`: the rest of `data`, and what is still left to skip.
fn skip(data: &[u8], left: u64) -> (&[u8], u64) {
    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
    (&data[take..], left - take as u64)
}

/// How hyper frames the body after `request` (RFC 9112 §6.3), or why the proxy refuses it.
fn judge(request: &httparse::Request<'_, '_>) -> Next {
    let mut lengths = 0usize;
    let mut length = None;
    let mut chunked = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            for part in header.value.split(|&b| b == b',') {
                lengths += 1;
                length = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // As hyper: the last coding of the last such header decides.
            let last = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(
                std::str::from_utf8(last).is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked")),
            );
        }
    }
    if chunked.is_some() && lengths > 0 {
        return Next::Ambiguous("Content-Length with Transfer-Encoding");
    }
    if lengths > 1 {
        return Next::Ambiguous("more than one Content-Length");
    }
    if request
        .method
        .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
    {
        return Next::State(State::Stopped);
    }
    Next::State(match chunked {
        Some(true) => State::ChunkSize,
        // hyper refuses a Transfer-Encoding that does not end in chunked, and a bad length.
        Some(false) => State::Stopped,
        None if lengths == 0 => State::Head,
        None => match length {
            Some(0) => State::Head,
            Some(length) => State::Body(length),
            None => State::Stopped,
        },
    })
}

/// A chunk-size line's size (`1a;ext=v`), if it is one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size)
        .ok()?
        .trim_end_matches([' ', '\t']);
    if size.is_empty() || size.len() > 16 {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

/// A client stream whose incoming bytes a [`Scanner`] sees on their way to hyper.
pub(crate) struct Scanned<S> {
    inner: S,
    scanner: Scanner,
}

impl<S> Scanned<S> {
    pub fn new(inner: S, scanner: Scanner) -> Self {
        Scanned { inner, scanner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Scanned<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && !self.scanner.stopped() {
            self.scanner.feed(&buf.filled()[before..]);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Scanned<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at `split`: the verdict for each of `requests` requests.
    fn verdicts(bytes: &[u8], split: usize, requests: usize) -> Vec<Option<&'static str>> {
        let verdicts = Arc::new(Verdicts::default());
        let mut scanner = Scanner::new(64 * 1024, verdicts.clone());
        let (a, b) = bytes.split_at(split.min(bytes.len()));
        scanner.feed(a);
        scanner.feed(b);
        (0..requests).map(|_| verdicts.next_request()).collect()
    }

    /// The same verdicts whatever the read boundaries.
    fn every_split(bytes: &[u8], requests: usize) -> Vec<Option<&'static str>> {
        let first = verdicts(bytes, 0, requests);
        for split in 1..=bytes.len() {
            assert_eq!(verdicts(bytes, split, requests), first, "split at {split}");
        }
        first
    }

    const GET: &[u8] = b"GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n";

    #[test]
    fn clean_requests_pass_and_bodies_are_skipped() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(GET);
        // A body that looks like an ambiguous head must not be read as one.
        let inner = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        bytes.extend_from_slice(
            format!(
                "POST http://a.example/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                inner.len()
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(inner);
        bytes.extend_from_slice(
            b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n",
        );
        bytes.extend_from_slice(GET);
        assert_eq!(every_split(&bytes, 5), [None; 5]);
    }

    #[test]
    fn ambiguous_heads_are_named_at_their_place() {
        let rows: [(&[u8], &str); 5] = [
            (
                b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\
                  Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "Content-Length with Transfer-Encoding",
            ),
            (
                b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
                  Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "Content-Length with Transfer-Encoding",
            ),
            (
                b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\
                  Content-Length: 5\r\n\r\nhello",
                "more than one Content-Length",
            ),
            (
                b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
                "more than one Content-Length",
            ),
            (
                b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\
                  Content-Length: 6\r\n\r\nhello!",
                "more than one Content-Length",
            ),
        ];
        for (row, why) in rows {
            let mut bytes = GET.to_vec();
            bytes.extend_from_slice(row);
            bytes.extend_from_slice(GET);
            assert_eq!(every_split(&bytes, 3), [None, Some(why), None]);
        }
    }

    #[test]
    fn stops_where_it_cannot_follow() {
        let rows: [&[u8]; 3] = [
            b"CONNECT a.example:443 HTTP/1.1\r\n\r\n",
            b"GARBAGE\r\n\r\n",
            b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        for row in rows {
            let mut bytes = row.to_vec();
            bytes.extend_from_slice(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            );
            let verdicts = Arc::new(Verdicts::default());
            let mut scanner = Scanner::new(1024, verdicts.clone());
            scanner.feed(&bytes);
            assert!(scanner.stopped());
            assert_eq!(
                [verdicts.next_request(), verdicts.next_request()],
                [None; 2]
            );
        }
        // A head longer than the limit.
        let verdicts = Arc::new(Verdicts::default());
        let mut scanner = Scanner::new(16, verdicts);
        scanner.feed(GET);
        assert!(scanner.stopped());
    }
}
