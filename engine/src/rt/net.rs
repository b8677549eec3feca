//! TCP sockets on the shard's io_uring: a listener every shard binds on the same address
//! (glommio sets SO_REUSEPORT, so the kernel spreads connections over the shards) and streams
//! split into a read half and a write half, so a connection can read its next request while
//! earlier responses are still being written.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

/// A listening socket owned by one shard.
pub struct TcpListener {
    inner: glommio::net::TcpListener,
}

impl TcpListener {
    /// Binds `address` with SO_REUSEPORT, so every shard can bind the same address.
    pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        let inner = glommio::net::TcpListener::bind(address).map_err(io::Error::from)?;
        Ok(TcpListener { inner })
    }

    /// The next connection; it stays on this shard.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let inner = self.inner.accept().await.map_err(io::Error::from)?;
        Ok(TcpStream { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(io::Error::from)
    }
}

/// A connected stream owned by one shard.
pub struct TcpStream {
    inner: glommio::net::TcpStream,
}

impl TcpStream {
    pub async fn connect(address: SocketAddr) -> io::Result<TcpStream> {
        let inner = glommio::net::TcpStream::connect(address)
            .await
            .map_err(io::Error::from)?;
        Ok(TcpStream { inner })
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr().map_err(io::Error::from)
    }

    pub fn set_nodelay(&self, value: bool) -> io::Result<()> {
        self.inner.set_nodelay(value).map_err(io::Error::from)
    }

    /// Takes over a connection another shard handed over with [`ReadHalf::duplicate`]; it is
    /// served on this shard's ring from now on.
    pub fn adopt(fd: OwnedFd) -> TcpStream {
        // SAFETY: the descriptor is owned (moved in) and is a connected TCP socket, as
        // `duplicate` made it.
        let inner = unsafe { glommio::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
        TcpStream { inner }
    }

    /// Splits the stream so reading and writing can proceed in different tasks of the shard.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        let fd = self.inner.as_raw_fd();
        let (read, write) = futures_lite::io::split(self.inner);
        (ReadHalf { inner: read, fd }, WriteHalf { inner: write })
    }
}

/// The reading side of a [`TcpStream`].
pub struct ReadHalf {
    inner: futures_lite::io::ReadHalf<glommio::net::TcpStream>,
    /// The stream's descriptor, open as long as `inner` holds the stream.
    fd: RawFd,
}

impl ReadHalf {
    /// A second descriptor for this connection's socket, to hand the connection to another
    /// shard ([`TcpStream::adopt`]). Only while this shard has no read or write of the socket
    /// in flight (glommio reads with a non-blocking `recv` after a readiness poll, so a pending
    /// poll holds no data). This shard then drops its halves, which closes only its own
    /// descriptor; never [`WriteHalf::close`], which would shut the socket down for both.
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        // SAFETY: `dup` of a descriptor `inner` keeps open; the new descriptor is owned by the
        // returned `OwnedFd` alone.
        let fd = unsafe { libc::dup(self.fd) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Reads what is available into `buffer`; 0 means the peer closed its side.
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buffer).await
    }

    /// Fills `buffer` completely or fails (`UnexpectedEof` if the peer closed first).
    pub async fn read_exact(&mut self, buffer: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buffer).await
    }
}

/// The writing side of a [`TcpStream`].
pub struct WriteHalf {
    inner: futures_lite::io::WriteHalf<glommio::net::TcpStream>,
}

impl WriteHalf {
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    /// Closes the write side (sends FIN); reads on the other half end once the peer closes.
    pub async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }
}
