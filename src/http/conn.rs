//! The connection under actix's HTTP/1 dispatcher: it holds a client's EOF back until the body
//! being read on that connection has taken every byte that arrived before it.
//!
//! Why: actix-http 3.20 reads the socket ahead of a request body into its own buffer (up to
//! 128 KiB) while the body's queue is full. If it reads EOF then, it fails the body without
//! decoding that buffer (`poll_request` returns early on backpressure, then the disconnect path
//! drops the payload), so a client that sent its last bytes and closed, or was killed, lost up
//! to 128 KiB that had reached us. Held back until the reader has drained the queue, the EOF
//! finds the queue open, and actix decodes its whole buffer before it fails the body.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the socket and the body readers of one connection share.
#[derive(Default)]
struct GateState {
    /// Bodies being read now (at most one with HTTP/1, but counting costs nothing).
    readers: usize,
    /// The socket reached EOF; the dispatcher has not been told yet.
    eof_held: bool,
    /// A reader drained its queue after the EOF: the dispatcher may have it.
    released: bool,
    /// The dispatcher, waiting for a read that will say EOF.
    dispatcher: Option<Waker>,
    /// A reader that found its queue empty: told of a held EOF, it looks once more, then
    /// releases it.
    reader: Option<Waker>,
}

/// One per connection: the socket holds one, each gated body another (through `conn_data`).
#[derive(Clone, Default)]
pub struct Gate(Rc<RefCell<GateState>>);

impl Gate {
    fn release_if(&self, condition: impl FnOnce(&GateState) -> bool) -> bool {
        let mut state = self.0.borrow_mut();
        let release = state.eof_held && !state.released && condition(&state);
        if release {
            state.released = true;
            if let Some(waker) = state.dispatcher.take() {
                waker.wake();
            }
        }
        release
    }

    /// A reader found its queue empty: the EOF may go now, or the reader hears of it later.
    fn reader_waits(&self, waker: &Waker) {
        if !self.release_if(|_| true) {
            self.0.borrow_mut().reader = Some(waker.clone());
        }
    }
}

/// The accepted socket, with its EOF gated.
pub struct GatedStream {
    io: TcpStream,
    gate: Gate,
}

impl GatedStream {
    pub fn new(io: TcpStream) -> GatedStream {
        GatedStream {
            io,
            gate: Gate::default(),
        }
    }

    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        {
            let mut state = self.gate.0.borrow_mut();
            if state.eof_held {
                if state.released || state.readers == 0 {
                    return Poll::Ready(Ok(()));
                }
                state.dispatcher = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        let at_eof = matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() == before;
        if at_eof && buf.remaining() > 0 {
            let mut state = self.gate.0.borrow_mut();
            if state.readers > 0 {
                state.eof_held = true;
                state.dispatcher = Some(cx.waker().clone());
                if let Some(reader) = state.reader.take() {
                    reader.wake();
                }
                return Poll::Pending;
            }
        }
        read
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request body whose connection's EOF waits until this reader has drained what arrived.
pub struct GatedBody<S> {
    body: S,
    gate: Option<Gate>,
}

impl<S> GatedBody<S> {
    /// Gates `body` on `gate` (none where the connection is not a `GatedStream`, as in tests
    /// that call handlers directly).
    pub fn new(body: S, gate: Option<Gate>) -> GatedBody<S> {
        if let Some(gate) = &gate {
            gate.0.borrow_mut().readers += 1;
        }
        GatedBody { body, gate }
    }
}

impl<S: Stream + Unpin> Stream for GatedBody<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if next.is_pending() {
            // The queue is empty, so actix's own buffer decodes whole once it learns of the EOF.
            if let Some(gate) = &self.gate {
                gate.reader_waits(cx.waker());
            }
        }
        next
    }
}

impl<S> Drop for GatedBody<S> {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.0.borrow_mut().readers -= 1;
            gate.release_if(|state| state.readers == 0);
        }
    }
}

/// The request's body, gated on its connection.
pub fn body(
    req: &actix_web::HttpRequest,
    payload: actix_web::web::Payload,
) -> GatedBody<actix_web::web::Payload> {
    GatedBody::new(payload, req.conn_data::<Gate>().cloned())
}
