//! Appendix A over the rings: the client side (`put`, `get`, `dir`, `cd`,
//! `pwd`, `close`) and the connector that serves any number of connections.
//!
//! Every exchange is strict request/response (the ring needs it: a side
//! acknowledges only while it receives). A file moves as one data message;
//! its BLAKE3 (computed while the bytes are sent) follows in a trailer, and
//! the receiver renames its temporary file into place only when the digest
//! matches, so a failed or interrupted transfer never leaves a partial file
//! under the target name.
//!
//! **Every request gets an answer.** The server creates its temporary file
//! before it says Ok to a put, so a name its file system refuses, a
//! read-only or immutable directory is an error reply, not silence; a
//! write that fails while data arrives (no space) is reported after the
//! data message and the commit, so both sides stay in step. Only regular
//! files and directories are served: a FIFO, socket or device node is
//! refused (it is opened with `O_NONBLOCK` and its type checked on the open
//! descriptor), and so is such a LOCAL file on the client.
//!
//! **Every wait has a deadline.** A wait for the peer ends when its lease
//! expires ([`PeerWatch`]) or it closes; a wait for a reply, for data or
//! for acknowledgements from a peer that is alive ends after three lease
//! timeouts (at least 30 s) without progress, plus 1 s per 16 MiB of
//! hashing or flushing the request makes the peer do
//! ([`Error::NoReply`]). The only wait without one is the server's wait for
//! a live client's next command.
//!
//! **Stopping.** Both [`with_client`] and [`serve`] take a stop flag (set
//! by a signal handler). A ring wait, a data chunk or a hashing loop that
//! sees it abandons the transfer: the temporary is removed (a resumable
//! partial is kept), the lease is marked closed (the peer sees that at its
//! next poll, within 50 ms, and gives up at once) and the entry is freed.
//! The transfer ends with [`Error::Interrupted`]; the server's accept loop
//! returns once every connection has ended.
//!
//! **Resume** (`CopyOptions::resume`): see the `temp` module for where the
//! partial copy lives and when it is kept, and [`crate::Request`] for the
//! messages. The sender checks the BLAKE3 of the receiver's partial against
//! its own first bytes and sends only the rest; the digest checked before
//! the rename is the whole file's.

mod temp;

use std::fs::{File, Metadata};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use fts_layout::Role;
use fts_lock::TableLock;
use fts_ring::{MessageSource, Poller, RingPort};
use rustix::fs::{AtFlags, FileType};

use crate::auth::{ClientAuth, ClientProof, Hello, PendingProof, ServerAuth};
use crate::lease::{Heartbeat, PeerWatch};
use crate::proto::{
    decode_request, decode_response, encode_request, encode_response, to_wire_text, DirEntry,
    EntryKind, ErrorCode, FromWireText, Request, Response, MAX_CONTROL_MESSAGE,
};
use crate::{
    accept_with, claim_with, close, pending_for, verify_server, wait_accepted_entry, Accepted,
    Access, Claim, Error, Identity, Root, RootError, Shared,
};
use temp::{TempError, TempFile};

/// Makes a fresh lock handle for a thread.
pub type LockFactory = Arc<dyn Fn() -> Result<Box<dyn TableLock>, fts_lock::Error> + Send + Sync>;

/// Timeouts for the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// How long to wait for the connector to accept.
    pub connect: Duration,
    /// How long to wait for the Process Id Table lock.
    pub lock: Duration,
}

/// How a put or get treats its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Overwrite an existing target.
    pub replace: bool,
    /// Continue from the partial copy an earlier attempt left (binary mode
    /// only), and keep this attempt's partial copy if it fails.
    pub resume: bool,
}

/// What a put or get moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Size of the whole file as it travels (CRLF line ends in text mode).
    pub size: u64,
    /// Where this transfer started: the length of the partial copy it
    /// continued (0 when it started from the beginning).
    pub offset: u64,
    /// Bytes that crossed the ring: `size - offset`.
    pub sent: u64,
}

/// The connector's settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Every remote path is confined to this directory.
    pub root: PathBuf,
    /// How long to wait for the Process Id Table lock.
    pub lock_timeout: Duration,
    /// At start, fts temporaries and partial copies under the root that
    /// were last written longer ago than this are removed.
    pub max_partial_age: Duration,
    /// Require clients to prove a trusted key, and prove ours; `None`:
    /// serve anyone who can write the device (the start says so).
    pub auth: Option<Arc<ServerAuth>>,
}

/// Hashing and flushing budget: 1 s per this many bytes.
const WORK_BYTES_PER_SEC: u64 = 16 << 20;

/// How often the peer's lease is read while waiting.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// Extra patience for work proportional to `bytes` (hashing, fsync).
fn work(bytes: u64) -> Duration {
    Duration::from_secs(bytes / WORK_BYTES_PER_SEC)
}

/// How long a live peer may take to start a reply or to make progress:
/// three lease timeouts, at least 30 s.
fn patience(shared: &Shared) -> Duration {
    (Duration::from_millis(u64::from(shared.mcb().lease_timeout_ms)) * 3)
        .max(Duration::from_secs(30))
}

/// What a connection's waits watch besides the peer's lease: the caller's
/// stop flag and, while the peer owes us something, a deadline.
struct Watch<'s> {
    stop: &'s AtomicBool,
    slot: u32,
    /// Who the peer is, for messages: `fts server "b"`, `fts client "a"`.
    peer: String,
    base: Instant,
    /// Milliseconds since `base` after which the awaited message is late;
    /// `u64::MAX` when nothing is due.
    deadline_ms: AtomicU64,
    /// How far each sign of progress moves the deadline.
    allowance_ms: AtomicU64,
    what: Mutex<&'static str>,
    /// The error that made us abort a ring operation (the ring itself only
    /// carries its text).
    cause: Mutex<Option<Error>>,
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("slot", &self.slot)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<'s> Watch<'s> {
    fn new(stop: &'s AtomicBool, slot: u32, peer: String) -> Watch<'s> {
        Watch {
            stop,
            slot,
            peer,
            base: Instant::now(),
            deadline_ms: AtomicU64::new(u64::MAX),
            allowance_ms: AtomicU64::new(0),
            what: Mutex::new("reply"),
            cause: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The peer owes us `what` within `allowance` (and each later sign of
    /// progress within `allowance` of the previous one).
    fn expect(&self, what: &'static str, allowance: Duration) {
        let ms = u64::try_from(allowance.as_millis()).unwrap_or(u64::MAX / 2);
        *lock(&self.what) = what;
        self.allowance_ms.store(ms, Ordering::Relaxed);
        self.deadline_ms
            .store(self.now_ms().saturating_add(ms), Ordering::Relaxed);
    }

    /// Nothing is due: the peer may stay silent as long as it lives.
    fn relax(&self) {
        self.deadline_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// The peer made progress: the deadline moves.
    fn progress(&self) {
        if self.deadline_ms.load(Ordering::Relaxed) != u64::MAX {
            let ms = self.allowance_ms.load(Ordering::Relaxed);
            self.deadline_ms
                .store(self.now_ms().saturating_add(ms), Ordering::Relaxed);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `Err` when we were asked to stop or the peer is late.
    fn check(&self) -> Result<(), Error> {
        if self.stopped() {
            return Err(Error::Interrupted);
        }
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        if deadline != u64::MAX && self.now_ms() > deadline {
            return Err(Error::NoReply {
                slot: self.slot,
                peer: self.peer.clone(),
                what: *lock(&self.what),
                waited: Duration::from_millis(self.allowance_ms.load(Ordering::Relaxed)),
            });
        }
        Ok(())
    }

    /// Remembers why a ring operation is being abandoned; returns its text.
    fn abort(&self, e: Error) -> String {
        let text = e.to_string();
        *lock(&self.cause) = Some(self.name_peer(e));
        text
    }

    /// Names the peer in errors about it (the lease code only knows roles).
    fn name_peer(&self, e: Error) -> Error {
        match e {
            Error::PeerClosed { slot, .. } => Error::PeerClosed {
                slot,
                peer: self.peer.clone(),
            },
            Error::PeerDead { slot, silent, .. } => Error::PeerDead {
                slot,
                peer: self.peer.clone(),
                silent,
            },
            other => other,
        }
    }

    /// The session error behind a failed ring operation.
    fn ring<T>(&self, r: Result<T, fts_ring::Error>) -> Result<T, Error> {
        r.map_err(|e| match lock(&self.cause).take() {
            Some(cause) => cause,
            None if self.stopped() => Error::Interrupted,
            None => Error::Ring(e),
        })
    }
}

#[derive(Debug)]
struct SinkError(String);
impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SinkError {}

fn liveness<'d>(
    shared: &Shared,
    claim: Claim,
    peer: Role,
    watch: &'d Watch<'d>,
) -> Result<fts_ring::Liveness<'d>, Error> {
    let mut watch_dev = shared.reopen()?;
    let mut lease = PeerWatch::new(&watch_dev, claim, peer);
    let mut last = Instant::now();
    Ok(Box::new(move || {
        let gone = |reason| fts_ring::Error::PeerGone {
            slot: claim.slot,
            reason,
        };
        watch.check().map_err(|e| gone(watch.abort(e)))?;
        // Reading the lease costs one I/O: at most every 50 ms.
        if last.elapsed() < LEASE_POLL {
            return Ok(());
        }
        last = Instant::now();
        lease
            .check(&mut watch_dev)
            .map_err(|e| gone(watch.abort(e)))
    }))
}

/// One side's end of a connection: the port and what its waits watch.
struct Conn<'d> {
    port: RingPort<'d>,
    watch: &'d Watch<'d>,
    /// See [`patience`].
    patience: Duration,
    /// A device handle to read the peer's lease when our slot turns out to
    /// be taken (see [`Conn::ring`]).
    probe: Shared,
    claim: Claim,
    peer: Role,
}

impl Conn<'_> {
    /// The session error behind a failed ring operation. A peer that closes
    /// (a server that stops, a client that ends) marks its lease closed and
    /// then frees the entry; if our next write finds the slot freed (fenced)
    /// before our next lease poll, the truth is that the peer closed.
    fn ring<T>(&mut self, r: Result<T, fts_ring::Error>) -> Result<T, Error> {
        match self.watch.ring(r) {
            Err(Error::Ring(fts_ring::Error::Fenced { .. })) if self.peer_closed() => {
                Err(Error::PeerClosed {
                    slot: self.claim.slot,
                    peer: self.watch.peer.clone(),
                })
            }
            other => other,
        }
    }

    fn peer_closed(&mut self) -> bool {
        crate::read_lease(&mut self.probe, self.claim.slot, self.peer).is_ok_and(|l| {
            l.generation == self.claim.generation && l.state == fts_layout::LEASE_CLOSED
        })
    }

    fn recv_control(&mut self) -> Result<Vec<u8>, Error> {
        let mut msg = Vec::new();
        let r = self.port.recv(&mut |chunk: &[u8]| {
            if msg.len() + chunk.len() > MAX_CONTROL_MESSAGE {
                return Err(SinkError(format!(
                    "control message larger than {MAX_CONTROL_MESSAGE} bytes"
                )));
            }
            msg.extend_from_slice(chunk);
            Ok(())
        });
        self.ring(r)?;
        Ok(msg)
    }

    fn send_bytes(&mut self, mut bytes: Vec<u8>) -> Result<(), Error> {
        let len = bytes.len() as u64;
        let r = self.port.send(&mut bytes, len);
        self.ring(r)
    }

    fn reply(&mut self, resp: &Response) -> Result<(), Error> {
        self.watch.expect("acknowledgement", self.patience);
        self.send_bytes(encode_response(resp))
    }

    /// Sends `len` bytes of `src` (a file source checks the stop flag and
    /// counts progress itself).
    fn send_data(&mut self, src: &mut dyn MessageSource, len: u64) -> Result<(), Error> {
        self.watch.expect("acknowledgement", self.patience);
        let r = self.port.send(src, len);
        self.ring(r)
    }

    /// Receives a data message into `file` (CRLF → LF in text mode),
    /// continuing `hasher` over the wire bytes. A write error does not stop
    /// the reception: the rest of the message is drained so both sides stay
    /// in step, and the error is returned in [`Received::write_error`].
    fn receive(
        &mut self,
        file: &mut File,
        mut hasher: blake3::Hasher,
        text: bool,
    ) -> Result<Received, Error> {
        let watch = self.watch;
        let mut conv = FromWireText::new();
        let mut out = Vec::new();
        let mut write_error: Option<io::Error> = None;
        self.watch.expect("data", self.patience);
        let r = self.port.recv(&mut |chunk: &[u8]| {
            if let Err(e) = watch.check() {
                return Err(SinkError(watch.abort(e)));
            }
            watch.progress();
            hasher.update(chunk);
            if write_error.is_none() {
                let res = if text {
                    out.clear();
                    conv.push(chunk, &mut out);
                    file.write_all(&out)
                } else {
                    file.write_all(chunk)
                };
                write_error = res.err();
            }
            Ok(())
        });
        let info = self.ring(r)?;
        if text && write_error.is_none() {
            out.clear();
            conv.finish(&mut out);
            write_error = file.write_all(&out).err();
        }
        Ok(Received {
            len: info.len,
            digest: *hasher.finalize().as_bytes(),
            write_error,
        })
    }
}

/// What [`Conn::receive`] got.
struct Received {
    /// Bytes in the data message.
    len: u64,
    /// The hasher's result: of the wire bytes, after any resumed prefix.
    digest: [u8; 32],
    /// The first local write error, if any (the message was drained).
    write_error: Option<io::Error>,
}

/// A file as a message source: reads at `base + offset`, checks the stop
/// flag, moves the deadline, and hashes the bytes in order as they are
/// first read (a retransmission reads them again and is not hashed twice).
struct FileSource<'w> {
    file: File,
    base: u64,
    hasher: blake3::Hasher,
    hashed: u64,
    watch: &'w Watch<'w>,
}

impl FileSource<'_> {
    /// Hashes message bytes `[hashed, upto)` that were never read.
    fn catch_up(&mut self, upto: u64) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        while self.hashed < upto {
            let want = usize::try_from(upto - self.hashed)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = self
                .file
                .read_at(&mut buf[..want], self.base + self.hashed)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ));
            }
            self.hasher.update(&buf[..n]);
            self.hashed += n as u64;
        }
        Ok(())
    }

    /// The digest of everything hashed, the first `len` message bytes
    /// included.
    fn finish(mut self, len: u64) -> io::Result<[u8; 32]> {
        self.catch_up(len)?;
        Ok(*self.hasher.finalize().as_bytes())
    }
}

impl MessageSource for FileSource<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if let Err(e) = self.watch.check() {
            return Err(io::Error::other(self.watch.abort(e)));
        }
        self.watch.progress();
        if offset > self.hashed {
            self.catch_up(offset)?;
        }
        let n = self.file.read_at(buf, self.base + offset)?;
        let end = offset + n as u64;
        if end > self.hashed {
            let from = usize::try_from(self.hashed - offset).unwrap_or(n);
            self.hasher.update(&buf[from..n]);
            self.hashed = end;
        }
        Ok(n)
    }
}

/// BLAKE3 of the first `n` bytes of `file`, stopping when asked to.
fn hash_prefix(file: &File, n: u64, watch: &Watch<'_>) -> Result<blake3::Hasher, io::Error> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < n {
        if watch.stopped() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        watch.progress();
        let want = usize::try_from(n - at).unwrap_or(usize::MAX).min(buf.len());
        let got = file.read_at(&mut buf[..want], at)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than the partial copy",
            ));
        }
        h.update(&buf[..got]);
        at += got as u64;
    }
    Ok(h)
}

/// What a file type (of a `st_mode`) is, for messages: "a FIFO", "a
/// character device", ...
fn kind_of(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Symlink => "a symbolic link",
        _ => "not a regular file",
    }
}

/// Why [`open_regular`] refused.
enum OpenError {
    Io(io::Error),
    /// Not a regular file: what it is.
    NotRegular(&'static str),
}

/// Opens an existing file for reading without ever blocking (a FIFO opens
/// at once with `O_NONBLOCK`) and accepts it only if the open descriptor
/// is a regular file.
fn open_regular(path: &Path) -> Result<(File, Metadata), OpenError> {
    // Refuse device nodes and FIFOs before opening them (opening a device
    // can have effects, e.g. a tape rewinds); the check on the descriptor
    // below closes the race with a swap.
    let meta = std::fs::metadata(path).map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(kind_of(meta.mode())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(OpenError::Io)?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(kind_of(meta.mode())));
    }
    Ok((file, meta))
}

/// [`open_regular`] on the server: the remote path opened beneath the
/// root, first as a handle only (to refuse what is not a regular file
/// without opening it), then for reading, the type checked again on the
/// descriptor read from.
fn open_remote_regular(root: &Root, path: &str) -> Result<(File, Metadata), RootOpenError> {
    let check = |fd: OwnedFd| -> Result<(File, Metadata), RootOpenError> {
        let file = File::from(fd);
        let meta = file.metadata().map_err(RootOpenError::Io)?;
        if !meta.is_file() {
            return Err(RootOpenError::NotRegular(kind_of(meta.mode())));
        }
        Ok((file, meta))
    };
    check(root.open(path, Access::Inspect)?)?;
    check(root.open(path, Access::Read)?)
}

/// Why [`open_remote_regular`] refused.
enum RootOpenError {
    Root(RootError),
    Io(io::Error),
    /// Not a regular file: what it is.
    NotRegular(&'static str),
}

impl From<RootError> for RootOpenError {
    fn from(e: RootError) -> Self {
        RootOpenError::Root(e)
    }
}

/// Identity of the shared device on this host, to refuse it as a LOCAL
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeviceId {
    dev: u64,
    ino: u64,
    /// The device number of a block or character device node, else 0.
    rdev: u64,
}

impl DeviceId {
    fn of(m: &Metadata) -> DeviceId {
        let ft = m.file_type();
        DeviceId {
            dev: m.dev(),
            ino: m.ino(),
            rdev: if ft.is_block_device() || ft.is_char_device() {
                m.rdev()
            } else {
                0
            },
        }
    }

    fn same(&self, m: &Metadata) -> bool {
        let other = DeviceId::of(m);
        (self.dev == other.dev && self.ino == other.ino)
            || (self.rdev != 0 && self.rdev == other.rdev)
    }
}

/// Checks a LOCAL path before a transfer moves anything: it must not be
/// the shared device `device` (a location as given to `-d`; locations
/// that are not local paths, like `iscsi://`, are skipped), and it must be
/// a regular file: for reading (`put`) it must exist; for writing (`get`)
/// it may be absent. Returns [`Error::LocalRefused`] otherwise.
pub fn check_local(path: &Path, device: &str, writing: bool) -> Result<(), Error> {
    let refuse = |reason: String| Error::LocalRefused {
        path: path.display().to_string(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if writing && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Local {
                op: if writing { "inspect" } else { "open" },
                path: path.display().to_string(),
                source,
            })
        }
    };
    if let Ok(dm) = std::fs::metadata(device) {
        if DeviceId::of(&dm).same(&meta) {
            return Err(refuse(format!(
                "is the shared fts device {device} itself; refusing to {} it",
                if writing { "overwrite" } else { "send" }
            )));
        }
    }
    if !meta.is_file() {
        return Err(refuse(format!(
            "is {}; fts {} regular files only",
            kind_of(meta.mode()),
            if writing { "writes" } else { "reads" }
        )));
    }
    Ok(())
}

/// An open connection seen from the initiator.
pub struct Client<'d> {
    conn: Conn<'d>,
    replace_next: bool,
    text: bool,
    /// The server's fts name (partial copies of a get are keyed by it).
    server: String,
    /// The shared device's location, which LOCAL paths must not be.
    device: String,
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("port", &self.conn.port)
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

fn remote(resp: Response) -> Error {
    match resp {
        Response::Error { code, message } => Error::Remote { code, message },
        other => Error::Protocol(format!("unexpected reply {other:?}")),
    }
}

fn local_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Local {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// A local hashing failure: interrupted, or an I/O error on `path`.
fn hash_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::Interrupted {
            Error::Interrupted
        } else {
            local_err(op, path)(source)
        }
    }
}

impl Client<'_> {
    /// Sends `req` and waits for the reply; `work` is extra patience for
    /// what the request makes the server do.
    fn call_with(&mut self, req: &Request, work: Duration) -> Result<Response, Error> {
        self.conn
            .watch
            .expect("acknowledgement", self.conn.patience);
        self.conn.send_bytes(encode_request(req))?;
        self.conn
            .watch
            .expect("reply", self.conn.patience.saturating_add(work));
        let msg = self.conn.recv_control();
        self.conn.watch.relax();
        decode_response(&msg?).map_err(|e| Error::Protocol(e.to_string()))
    }

    fn call(&mut self, req: &Request) -> Result<Response, Error> {
        self.call_with(req, Duration::ZERO)
    }

    /// `replace`: the next get or put may overwrite.
    pub fn set_replace(&mut self) {
        self.replace_next = true;
    }

    /// Text mode (the patent's `PRO_TYPE_TEXT`): line endings are converted.
    pub fn set_text(&mut self, text: bool) {
        self.text = text;
    }

    /// The server's fts name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `put local remote` (`reput` with `opts.resume`). A LOCAL that is not
    /// a regular file, or is the shared device, is refused before anything
    /// is sent.
    pub fn put(
        &mut self,
        local: &Path,
        remote_path: &str,
        opts: CopyOptions,
    ) -> Result<Transferred, Error> {
        let replace = opts.replace || std::mem::take(&mut self.replace_next);
        check_local(local, &self.device, false)?;
        let (file, meta) = match open_regular(local) {
            Ok(x) => x,
            Err(OpenError::Io(e)) => return Err(local_err("open", local)(e)),
            Err(OpenError::NotRegular(what)) => {
                return Err(Error::LocalRefused {
                    path: local.display().to_string(),
                    reason: format!("is {what}; fts reads regular files only"),
                })
            }
        };
        if self.text {
            if opts.resume {
                return Err(Error::Protocol(
                    "resume works in binary mode only".to_string(),
                ));
            }
            return self.put_text(file, local, remote_path, replace);
        }
        let size = meta.len();
        let (offset, hasher) = if opts.resume {
            let req = Request::PutResume {
                path: remote_path.into(),
                size,
                replace,
            };
            // The server hashes its partial copy (at most `size` bytes).
            let (have, digest) = match self.call_with(&req, work(size))? {
                Response::Partial { offset, blake3 } => (offset, blake3),
                other => return Err(remote(other)),
            };
            let mut from = (0, blake3::Hasher::new());
            if have > 0 && have <= size {
                let h =
                    hash_prefix(&file, have, self.conn.watch).map_err(hash_err("read", local))?;
                if *h.finalize().as_bytes() == digest {
                    from = (have, h);
                }
            }
            match self.call(&Request::Resume { offset: from.0 })? {
                Response::Ok => from,
                other => return Err(remote(other)),
            }
        } else {
            let req = Request::Put {
                path: remote_path.into(),
                size,
                replace,
                text: false,
            };
            match self.call(&req)? {
                Response::Ok => (0, blake3::Hasher::new()),
                other => return Err(remote(other)),
            }
        };
        let len = size - offset;
        let mut src = FileSource {
            file,
            base: offset,
            hasher,
            hashed: 0,
            watch: self.conn.watch,
        };
        self.conn.send_data(&mut src, len)?;
        let digest = src.finish(len).map_err(local_err("read", local))?;
        match self.call_with(&Request::Commit { blake3: digest }, work(size))? {
            Response::Ok => Ok(Transferred {
                size,
                offset,
                sent: len,
            }),
            other => Err(remote(other)),
        }
    }

    fn put_text(
        &mut self,
        mut file: File,
        local: &Path,
        remote_path: &str,
        replace: bool,
    ) -> Result<Transferred, Error> {
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)
            .map_err(local_err("read", local))?;
        let wire = to_wire_text(&raw);
        let digest = *blake3::hash(&wire).as_bytes();
        let size = wire.len() as u64;
        let req = Request::Put {
            path: remote_path.into(),
            size,
            replace,
            text: true,
        };
        match self.call(&req)? {
            Response::Ok => {}
            other => return Err(remote(other)),
        }
        let mut src = wire;
        self.conn.send_data(&mut src, size)?;
        match self.call_with(&Request::Commit { blake3: digest }, work(size))? {
            Response::Ok => Ok(Transferred {
                size,
                offset: 0,
                sent: size,
            }),
            other => Err(remote(other)),
        }
    }

    /// `get remote local` (`reget` with `opts.resume`). A LOCAL that exists
    /// and is not a regular file, or is the shared device, is refused
    /// before anything is sent.
    pub fn get(
        &mut self,
        remote_path: &str,
        local: &Path,
        opts: CopyOptions,
    ) -> Result<Transferred, Error> {
        let replace = opts.replace || std::mem::take(&mut self.replace_next);
        check_local(local, &self.device, true)?;
        if !replace && local.symlink_metadata().is_ok() {
            return Err(Error::LocalExists {
                path: local.display().to_string(),
            });
        }
        if opts.resume && self.text {
            return Err(Error::Protocol(
                "resume works in binary mode only".to_string(),
            ));
        }
        // Created, renamed and removed relative to the directory opened here.
        let (dir, name) =
            temp::local_parent(local).map_err(local_err("create a temporary file for", local))?;
        let create = local_err("create a temporary file for", local);
        let mut tmp = if opts.resume {
            let key = absolute(local);
            match TempFile::partial(dir.as_fd(), &key, &self.server) {
                Ok(t) => t,
                Err(TempError::Io(e)) => return Err(create(e)),
                Err(TempError::Busy) => {
                    return Err(Error::LocalRefused {
                        path: local.display().to_string(),
                        reason: "another fts transfer is resuming this file".into(),
                    })
                }
                Err(TempError::NotRegular) => return Err(Error::LocalRefused {
                    path: local.display().to_string(),
                    reason:
                        "its partial copy's name is taken by something that is not a regular file"
                            .into(),
                }),
            }
        } else {
            TempFile::unique(dir.as_fd(), &name).map_err(create)?
        };
        let (req, have, prefix) = if opts.resume {
            let have = tmp.len().map_err(local_err("read", local))?;
            let h =
                hash_prefix(tmp.file(), have, self.conn.watch).map_err(hash_err("read", local))?;
            let req = Request::GetResume {
                path: remote_path.into(),
                offset: have,
                blake3: *h.finalize().as_bytes(),
            };
            (req, have, h)
        } else {
            let req = Request::Get {
                path: remote_path.into(),
                text: self.text,
            };
            (req, 0, blake3::Hasher::new())
        };
        // The server hashes as many bytes as our partial copy holds.
        let (size, offset) = match self.call_with(&req, work(have))? {
            Response::Ready { size, .. } if !opts.resume => (size, 0),
            Response::ReadyFrom { size, offset, .. } if opts.resume => {
                if offset != 0 && offset != have {
                    return Err(Error::Protocol(format!(
                        "server resumes at byte {offset}, but the partial copy has {have}"
                    )));
                }
                (size, offset)
            }
            other => return Err(remote(other)),
        };
        let hasher = if offset == have {
            prefix
        } else {
            blake3::Hasher::new()
        };
        tmp.truncate_to(offset).map_err(local_err("write", local))?;
        let rx = self.conn.receive(tmp.file(), hasher, self.text)?;
        self.conn.watch.expect("digest", self.conn.patience);
        let msg = self.conn.recv_control();
        self.conn.watch.relax();
        let trailer = decode_response(&msg?).map_err(|e| Error::Protocol(e.to_string()))?;
        if let Some(e) = rx.write_error {
            return Err(local_err("write", local)(e));
        }
        match trailer {
            Response::Digest { blake3 } if blake3 == rx.digest && offset + rx.len == size => {}
            Response::Digest { .. } => {
                tmp.discard();
                return Err(Error::Integrity {
                    path: local.display().to_string(),
                });
            }
            other => return Err(remote(other)),
        }
        tmp.commit(&name, replace).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                Error::LocalExists {
                    path: local.display().to_string(),
                }
            } else {
                local_err("rename into place", local)(source)
            }
        })?;
        if !opts.resume {
            temp::remove_partial(dir.as_fd(), &absolute(local), &self.server);
        }
        Ok(Transferred {
            size,
            offset,
            sent: rx.len,
        })
    }

    /// `dir [name]`.
    pub fn dir(&mut self, path: Option<&str>) -> Result<Vec<DirEntry>, Error> {
        match self.call(&Request::Dir {
            path: path.map(str::to_string),
        })? {
            Response::Listing { entries } => Ok(entries),
            other => Err(remote(other)),
        }
    }

    /// `cd directory`: returns the new remote directory.
    pub fn cd(&mut self, path: &str) -> Result<String, Error> {
        match self.call(&Request::Cd { path: path.into() })? {
            Response::Cwd { path } => Ok(path),
            other => Err(remote(other)),
        }
    }

    /// The remote current directory.
    pub fn pwd(&mut self) -> Result<String, Error> {
        match self.call(&Request::Pwd)? {
            Response::Cwd { path } => Ok(path),
            other => Err(remote(other)),
        }
    }
}

/// `path` made absolute without resolving its last component (which may
/// not exist yet): the key of a get's partial copy.
fn absolute(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// `open server`, run `f` on the connection, then `close` (always). When
/// `stop` is raised, the transfer under way ends with
/// [`Error::Interrupted`]; the lease is marked closed and the entry freed
/// all the same.
#[allow(clippy::too_many_arguments)]
pub fn with_client<R>(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    server: &str,
    t: ClientTimeouts,
    auth: Option<&ClientAuth>,
    stop: &AtomicBool,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    // Every ring uses every device: without one, nothing can move.
    shared.require_secondaries()?;
    let hello = auth.map(Hello::new);
    let handshake = auth.zip(hello.as_ref());
    let c = claim_with(shared, lock, me, server, t.lock, handshake)?;
    let entry = wait_accepted_entry(shared, lock, c, server, t.connect, t.lock, stop)?;
    // The server proves its key before anything of ours goes to the ring.
    let proof = match handshake {
        Some((a, h)) => match verify_server(a, h, shared.mcb().blk5_layout_uuid, server, &entry) {
            Ok(p) => Some(p),
            Err(e) => {
                let _ = close(shared, lock, c, t.lock);
                return Err(e);
            }
        },
        None => None,
    };
    let result = run_client(shared, c, me, server, t.connect, proof, stop, f);
    let closed = close(shared, lock, c, t.lock);
    let r = result?;
    closed?;
    Ok(r)
}

/// Waits until `watch_for`'s command area holds a record of this
/// connection's generation that `done` recognises (`Some`), the peer
/// dies or closes, the slot stops being ours, `stop` is raised or
/// `timeout` passes (`what` names the wait in the error).
fn wait_command<T>(
    shared: &mut Shared,
    c: Claim,
    watch_for: Role,
    timeout: Duration,
    stop: &AtomicBool,
    mut done: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Option<T>, Error> {
    let mut backoff = fts_lock::Backoff::with_delays(
        timeout,
        Duration::from_micros(50),
        Duration::from_millis(5),
    );
    let mut peer = PeerWatch::new(shared, c, watch_for);
    let mut last_check = Instant::now();
    loop {
        if let Ok(cmd) = crate::read_command(shared, c.slot, watch_for) {
            if cmd.generation == c.generation {
                if let Some(v) = done(&cmd.data) {
                    return Ok(Some(v));
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        if last_check.elapsed() >= LEASE_POLL {
            crate::check_owner(shared, c)?;
            peer.check(shared)?;
            last_check = Instant::now();
        }
        if !backoff.wait() {
            return Ok(None);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_client<R>(
    shared: &mut Shared,
    c: Claim,
    me: &Identity,
    server: &str,
    connect_timeout: Duration,
    proof: Option<ClientProof>,
    stop: &AtomicBool,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let watch = Watch::new(stop, c.slot, format!("fts server {server:?}"));
    let cmd = proof.as_ref().map(|p| p.proof.to_vec()).unwrap_or_default();
    let hb = Heartbeat::start_with_command(shared, c, Role::Initiator, me.host, cmd)?;
    if proof.is_some() {
        // The server checks our signature and says so in its command area.
        let verdict = wait_command(shared, c, Role::Connector, connect_timeout, stop, |d| {
            d.first().copied()
        });
        let refused = |reason: String| Error::Auth {
            server: server.to_string(),
            side: "the server",
            reason,
        };
        let err = match verdict {
            Ok(Some(crate::auth::VERDICT_OK)) => None,
            Ok(Some(_)) => Some(refused(
                "it could not verify this client's proof of its key".into(),
            )),
            Ok(None) => Some(refused(format!(
                "it gave no verdict on this client's proof within {connect_timeout:?}"
            ))),
            Err(Error::PeerClosed { .. }) => Some(refused(
                "it closed the connection before confirming this client's key".into(),
            )),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            let _ = hb.stop();
            return Err(e);
        }
    }
    let live = liveness(shared, c, Role::Connector, &watch)?;
    let fence = crate::ring_fence(shared, c)?;
    let geo = shared.geometry().clone();
    let id = shared.mcb().layout_id();
    let patience = patience(shared);
    let device = shared.location().to_string();
    let probe = shared.reopen()?;
    let r = (|| {
        // A handle on every secondary device: the rings are striped over
        // all of them.
        let secondaries = shared.secondary_handles()?;
        let mut port = RingPort::new(
            shared.device(),
            geo,
            c.slot,
            Role::Initiator,
            c.generation,
            id,
        )?;
        port.set_devices(secondaries)?;
        port.set_fence(fence);
        if let Some(p) = proof.as_ref().filter(|p| p.sealed) {
            let (send, recv) = p.keys.for_role(Role::Initiator);
            port.set_seal(fts_ring::SealKeys { send, recv })?;
        }
        port.init_table()?;
        port.set_liveness(live);
        let mut client = Client {
            conn: Conn {
                port,
                watch: &watch,
                patience,
                probe,
                claim: c,
                peer: Role::Connector,
            },
            replace_next: false,
            text: false,
            server: server.to_string(),
            device,
        };
        let r = f(&mut client)?;
        client.call(&Request::Close)?;
        Ok(r)
    })();
    match &r {
        // Dead or fenced: writing our lease would say nothing true.
        Err(Error::PeerDead { .. } | Error::Fenced { .. }) => {
            drop(hb);
            r
        }
        // Our error says more than one about closing.
        Err(_) => {
            let _ = hb.stop();
            r
        }
        Ok(_) => {
            hb.stop()?;
            r
        }
    }
}

fn err_resp(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn io_code(e: &io::Error) -> ErrorCode {
    match (e.kind(), e.raw_os_error()) {
        (_, Some(libc::ENOSPC | libc::EDQUOT)) => ErrorCode::NoSpace,
        (io::ErrorKind::NotFound, _) => ErrorCode::NotFound,
        (io::ErrorKind::PermissionDenied, _) => ErrorCode::Permission,
        (io::ErrorKind::AlreadyExists, _) => ErrorCode::Exists,
        _ => ErrorCode::Io,
    }
}

fn io_resp(what: &str, e: &io::Error) -> Response {
    err_resp(io_code(e), format!("{what}: {e}"))
}

fn mtime_ns(m: &Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// [`mtime_ns`] of a `stat`.
fn stat_mtime_ns(st: &rustix::fs::Stat) -> u64 {
    crate::beneath::mtime(st)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The entries of the directory open as `dir` (opened beneath the root),
/// without fts temporaries; each is inspected relative to `dir`, without
/// following symbolic links.
fn listing(dir: OwnedFd, shown: &str) -> Response {
    let mut rd = match rustix::fs::Dir::read_from(&dir) {
        Ok(rd) => rd,
        Err(e) => return io_resp(shown, &e.into()),
    };
    let mut entries = Vec::new();
    while let Some(Ok(e)) = rd.read() {
        let name = std::ffi::OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." || temp::classify(name).is_some() {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => EntryKind::Symlink,
            FileType::Directory => EntryKind::Dir,
            FileType::RegularFile => EntryKind::File,
            _ => EntryKind::Other,
        };
        entries.push(DirEntry {
            name: name.to_string_lossy().into_owned(),
            size: u64::try_from(st.st_size).unwrap_or(0),
            kind,
            mtime_ns: stat_mtime_ns(&st),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Response::Listing { entries }
}

/// The server's side of one connection.
struct Served<'d> {
    conn: Conn<'d>,
    root: Root,
    /// The client's fts name (partial copies of a put are keyed by it).
    peer: String,
}

/// Serves one accepted connection until the client closes or dies, or
/// `stop` is raised.
fn serve_connection(
    mut shared: Shared,
    c: Claim,
    me: &Identity,
    peer: &str,
    proof: Option<PendingProof>,
    root: &Root,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let watch = Watch::new(stop, c.slot, format!("fts client {peer:?}"));
    let mut hb = Heartbeat::start(&shared, c, Role::Connector, me.host)?;
    if let Some(p) = &proof {
        // The client's signature arrives in its command area once it has
        // checked ours.
        let wait = patience(&shared);
        let got = wait_command(&mut shared, c, Role::Initiator, wait, stop, |d| {
            (d.len() == 64).then(|| p.verify(d))
        });
        let refuse = |reason: String| Error::Auth {
            server: me.name.clone(),
            side: "this server",
            reason,
        };
        let err = match got {
            Ok(Some(true)) => {
                hb.set_command(&[crate::auth::VERDICT_OK])?;
                None
            }
            Ok(Some(false)) => {
                let _ = hb.set_command(&[crate::auth::VERDICT_BAD_PROOF]);
                Some(refuse(format!(
                    "client {peer:?} did not prove its key {} (a replayed or forged handshake)",
                    p.client_key()
                )))
            }
            Ok(None) => Some(refuse(format!(
                "client {peer:?} sent no proof of its key {} in time",
                p.client_key()
            ))),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            let _ = hb.stop();
            return Err(e);
        }
    }
    let live = liveness(&shared, c, Role::Initiator, &watch)?;
    let fence = crate::ring_fence(&shared, c)?;
    let geo = shared.geometry().clone();
    let id = shared.mcb().layout_id();
    let patience = patience(&shared);
    let probe = shared.reopen()?;
    let r = (|| {
        // Its own current directory; the root's descriptor is shared.
        let root = root.clone();
        // A handle on every secondary device: the rings are striped over
        // all of them.
        let secondaries = shared.secondary_handles()?;
        let mut port = RingPort::new(
            shared.device(),
            geo,
            c.slot,
            Role::Connector,
            c.generation,
            id,
        )?;
        port.set_devices(secondaries)?;
        port.set_fence(fence);
        if let Some(p) = proof.as_ref().filter(|p| p.sealed) {
            let (send, recv) = p.keys.for_role(Role::Connector);
            port.set_seal(fts_ring::SealKeys { send, recv })?;
        }
        port.init_table()?;
        port.set_liveness(live);
        port.set_poller(Poller::new(Duration::from_millis(5)));
        let mut s = Served {
            conn: Conn {
                port,
                watch: &watch,
                patience,
                probe,
                claim: c,
                peer: Role::Initiator,
            },
            root,
            peer: peer.to_string(),
        };
        s.run()
    })();
    match &r {
        // The client is dead (its lease expired; ours may as well) or the
        // slot is no longer ours: write nothing more.
        Err(Error::PeerDead { .. } | Error::Fenced { .. }) => drop(hb),
        // Closed normally: the client may already have freed the entry, so
        // a fenced close is expected.
        Ok(()) => match hb.stop() {
            Ok(()) | Err(Error::Fenced { .. }) => {}
            Err(e) => return Err(e),
        },
        // Stopping, or a failure: mark our lease closed so the client gives
        // up at its next poll instead of waiting for a lease timeout.
        Err(_) => {
            let _ = hb.stop();
        }
    }
    r
}

impl Served<'_> {
    fn run(&mut self) -> Result<(), Error> {
        loop {
            // A live client may stay idle between commands as long as it likes.
            self.conn.watch.relax();
            let msg = self.conn.recv_control()?;
            let req = match decode_request(&msg) {
                Ok(r) => r,
                Err(e) => {
                    self.conn
                        .reply(&err_resp(ErrorCode::BadRequest, e.to_string()))?;
                    continue;
                }
            };
            let resp = match req {
                Request::Close => {
                    self.conn.reply(&Response::Ok)?;
                    return Ok(());
                }
                Request::Pwd => Response::Cwd {
                    path: self.root.pwd(),
                },
                Request::Cd { path } => match self.root.cd(&path) {
                    Ok(()) => Response::Cwd {
                        path: self.root.pwd(),
                    },
                    Err(e) => e.to_response(),
                },
                Request::Dir { path } => {
                    let shown = path.clone().unwrap_or_else(|| ".".into());
                    match self.root.open(&shown, Access::List) {
                        Ok(dir) => listing(dir, &shown),
                        Err(e) => e.to_response(),
                    }
                }
                Request::Commit { .. } => err_resp(ErrorCode::BadRequest, "commit without put"),
                Request::Resume { .. } => err_resp(ErrorCode::BadRequest, "resume without put"),
                Request::Get { path, text } => {
                    self.get(&path, text, None)?;
                    continue;
                }
                Request::GetResume {
                    path,
                    offset,
                    blake3,
                } => {
                    self.get(&path, false, Some((offset, blake3)))?;
                    continue;
                }
                Request::Put {
                    path,
                    size,
                    replace,
                    text,
                } => {
                    self.put(&path, size, replace, text, false)?;
                    continue;
                }
                Request::PutResume {
                    path,
                    size,
                    replace,
                } => {
                    self.put(&path, size, replace, false, true)?;
                    continue;
                }
            };
            self.conn.reply(&resp)?;
        }
    }

    fn get(
        &mut self,
        path: &str,
        text: bool,
        resume: Option<(u64, [u8; 32])>,
    ) -> Result<(), Error> {
        let (file, meta) = match open_remote_regular(&self.root, path) {
            Ok(x) => x,
            Err(RootOpenError::Root(e)) => return self.conn.reply(&e.to_response()),
            Err(RootOpenError::NotRegular("a directory")) => {
                return self.conn.reply(&err_resp(
                    ErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                ))
            }
            Err(RootOpenError::NotRegular(what)) => {
                return self.conn.reply(&err_resp(
                    ErrorCode::NotRegular,
                    format!(
                        "{path} is {what}; the server serves regular files and directories only"
                    ),
                ))
            }
            Err(RootOpenError::Io(e)) => return self.conn.reply(&io_resp(path, &e)),
        };
        if text {
            return self.get_text(file, &meta, path);
        }
        let size = meta.len();
        let (offset, hasher) = match resume {
            Some((have, digest)) if have > 0 && have <= size => {
                match hash_prefix(&file, have, self.conn.watch) {
                    Ok(h) if *h.finalize().as_bytes() == digest => (have, h),
                    Ok(_) => (0, blake3::Hasher::new()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        return Err(Error::Interrupted)
                    }
                    Err(e) => return self.conn.reply(&io_resp(path, &e)),
                }
            }
            _ => (0, blake3::Hasher::new()),
        };
        let ready = match resume {
            Some(_) => Response::ReadyFrom {
                size,
                mtime_ns: mtime_ns(&meta),
                offset,
            },
            None => Response::Ready {
                size,
                mtime_ns: mtime_ns(&meta),
            },
        };
        self.conn.reply(&ready)?;
        let len = size - offset;
        let mut src = FileSource {
            file,
            base: offset,
            hasher,
            hashed: 0,
            watch: self.conn.watch,
        };
        self.conn.send_data(&mut src, len)?;
        let trailer = match src.finish(len) {
            Ok(digest) => Response::Digest { blake3: digest },
            Err(e) => io_resp(path, &e),
        };
        self.conn.reply(&trailer)
    }

    fn get_text(&mut self, mut file: File, meta: &Metadata, path: &str) -> Result<(), Error> {
        let mut raw = Vec::new();
        if let Err(e) = file.read_to_end(&mut raw) {
            return self.conn.reply(&io_resp(path, &e));
        }
        let mut wire = to_wire_text(&raw);
        let digest = *blake3::hash(&wire).as_bytes();
        let size = wire.len() as u64;
        self.conn.reply(&Response::Ready {
            size,
            mtime_ns: mtime_ns(meta),
        })?;
        self.conn.send_data(&mut wire, size)?;
        self.conn.reply(&Response::Digest { blake3: digest })
    }

    fn put(
        &mut self,
        path: &str,
        size: u64,
        replace: bool,
        text: bool,
        resume: bool,
    ) -> Result<(), Error> {
        let target = match self.root.open_new(path) {
            Ok(t) => t,
            Err(e) => return self.conn.reply(&e.to_response()),
        };
        if temp::classify(target.name()).is_some() {
            return self.conn.reply(&err_resp(
                ErrorCode::BadRequest,
                format!(
                    "{path}: names of the form .NAME.fts-... are reserved for fts temporary files"
                ),
            ));
        }
        let existing = rustix::fs::statat(target.dir(), target.name(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode));
        match existing {
            Ok(FileType::Directory) => {
                return self.conn.reply(&err_resp(
                    ErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                ))
            }
            Ok(ft) if ft != FileType::RegularFile => {
                return self.conn.reply(&err_resp(
                    ErrorCode::NotRegular,
                    format!(
                        "{path} is {}; the server replaces regular files only",
                        kind_of(ft.as_raw_mode())
                    ),
                ))
            }
            Ok(_) if !replace => {
                return self.conn.reply(&err_resp(
                    ErrorCode::Exists,
                    format!("{path} exists; use replace to overwrite it"),
                ))
            }
            _ => {}
        }
        // The temporary exists before we say Ok: a server that cannot
        // write there says so now, not by going silent.
        let made = if resume {
            TempFile::partial(target.dir(), target.path(), &self.peer)
        } else {
            TempFile::unique(target.dir(), target.name()).map_err(TempError::Io)
        };
        let mut tmp = match made {
            Ok(t) => t,
            Err(TempError::Io(e)) => {
                return self.conn.reply(&io_resp(
                    &format!("{path}: cannot create a temporary file next to it"),
                    &e,
                ))
            }
            Err(TempError::Busy) => {
                return self.conn.reply(&err_resp(
                    ErrorCode::Busy,
                    format!("{path}: another transfer from this client is resuming it"),
                ))
            }
            Err(TempError::NotRegular) => {
                return self.conn.reply(&err_resp(
                    ErrorCode::NotRegular,
                    format!("{path}: its partial copy's name is taken by something that is not a regular file"),
                ))
            }
        };
        let (offset, hasher) = if resume {
            match self.offer_partial(&mut tmp, path, size)? {
                Some(x) => x,
                None => return Ok(()),
            }
        } else {
            (0, blake3::Hasher::new())
        };
        if let Err(e) = tmp.truncate_to(offset) {
            return self.conn.reply(&io_resp(path, &e));
        }
        self.conn.reply(&Response::Ok)?;
        let rx = self.conn.receive(tmp.file(), hasher, text)?;
        // Always read the commit, so both sides stay in step.
        self.conn.watch.expect("commit", self.conn.patience);
        let msg = self.conn.recv_control()?;
        if let Some(e) = rx.write_error {
            // A partial copy keeps what was written (a resume after space
            // was freed continues from there); a plain temporary goes.
            return self.conn.reply(&io_resp(&format!("write {path}"), &e));
        }
        let resp = match decode_request(&msg) {
            Ok(Request::Commit { blake3 }) if blake3 == rx.digest && offset + rx.len == size => {
                // fsync: patience for the bytes just written.
                self.conn.watch.expect(
                    "acknowledgement",
                    self.conn.patience.saturating_add(work(size)),
                );
                match tmp.commit(target.name(), replace) {
                    Ok(()) => {
                        if !resume {
                            temp::remove_partial(target.dir(), target.path(), &self.peer);
                        }
                        Response::Ok
                    }
                    Err(e) => io_resp(path, &e),
                }
            }
            Ok(Request::Commit { .. }) => {
                tmp.discard();
                err_resp(
                    ErrorCode::Integrity,
                    format!("{path}: BLAKE3 mismatch; file discarded"),
                )
            }
            _ => err_resp(ErrorCode::BadRequest, "expected commit after put data"),
        };
        self.conn.reply(&resp)
    }

    /// The resume exchange of a put: offers the partial copy, reads the
    /// client's choice. `None` when an error reply ended the request.
    fn offer_partial(
        &mut self,
        tmp: &mut TempFile,
        path: &str,
        size: u64,
    ) -> Result<Option<(u64, blake3::Hasher)>, Error> {
        let have = match tmp.len() {
            Ok(n) if n <= size => n,
            Ok(_) => 0, // longer than the file: not a prefix of it
            Err(e) => {
                self.conn.reply(&io_resp(path, &e))?;
                return Ok(None);
            }
        };
        let h = match hash_prefix(tmp.file(), have, self.conn.watch) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(Error::Interrupted),
            Err(e) => {
                self.conn.reply(&io_resp(path, &e))?;
                return Ok(None);
            }
        };
        self.conn.reply(&Response::Partial {
            offset: have,
            blake3: *h.finalize().as_bytes(),
        })?;
        // The client hashes as many bytes of its own.
        self.conn.watch.expect(
            "resume offset",
            self.conn.patience.saturating_add(work(have)),
        );
        let msg = self.conn.recv_control()?;
        match decode_request(&msg) {
            Ok(Request::Resume { offset }) if offset == have => Ok(Some((have, h))),
            Ok(Request::Resume { offset: 0 }) => Ok(Some((0, blake3::Hasher::new()))),
            _ => {
                self.conn.reply(&err_resp(
                    ErrorCode::BadRequest,
                    format!("expected resume at byte 0 or {have}"),
                ))?;
                Ok(None)
            }
        }
    }
}

/// The connector: accepts connections for `me.name` until `stop` is set,
/// one thread (with its own device handle) per connection; then every
/// connection is ended (temporaries removed, leases closed, entries freed)
/// before it returns.
///
/// At start it checks the root and removes stale fts temporaries under it
/// (see [`ServeOptions::max_partial_age`]), then registers `me.name`
/// ([`crate::Registration`]): [`Error::NameTaken`] while another live
/// server holds it. Should the registration be lost while serving (this
/// process was stopped longer than a lease timeout and another server took
/// the name), it raises `stop` itself so every connection ends, and
/// returns [`Error::NameTaken`] or [`Error::Fenced`]. A normal end closes
/// the registration's lease and frees its entry.
pub fn serve(
    shared: &mut Shared,
    locks: LockFactory,
    me: &Identity,
    opts: &ServeOptions,
    stop: &AtomicBool,
    log: &(dyn Fn(String) + Sync),
) -> Result<(), Error> {
    // Every ring uses every device: without one, nothing can move.
    shared.require_secondaries()?;
    // Opened once: every connection opens its paths beneath this directory.
    let root = Root::new(&opts.root).map_err(local_err("serve", &opts.root))?;
    let root_dir = root.root().to_path_buf();
    let swept = temp::sweep(root.dir(), opts.max_partial_age);
    if !swept.removed.is_empty() {
        log(format!(
            "removed {} stale temporary file(s) under {}: {}",
            swept.removed.len(),
            root_dir.display(),
            swept
                .removed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (p, e) in &swept.failed {
        log(format!(
            "cannot remove stale temporary {}: {e}",
            p.display()
        ));
    }
    let lock_timeout = opts.lock_timeout;
    let auth = opts.auth.as_deref();
    let root = &root;
    let mut lock = locks()?;
    // One live server per name: registered before anything is accepted,
    // refused (Error::NameTaken) while a live server holds the name.
    let mut registration =
        crate::Registration::register(shared, lock.as_mut(), me, lock_timeout, log)?;
    // Only now: a refused server never said it serves.
    log(format!(
        "serving as {:?} on {} from {}",
        me.name,
        shared.location(),
        root_dir.display()
    ));
    let mut poller = Poller::new(Duration::from_millis(30));
    let mut reaper = crate::Reaper::new(shared);
    let served = std::thread::scope(|scope| -> Result<(), Error> {
        while !stop.load(Ordering::Relaxed) {
            // The name is no longer ours (we were presumed dead and it was
            // taken over or freed): stop, and end every connection.
            if !registration.keep_alive(log) {
                stop.store(true, Ordering::SeqCst);
                break;
            }
            // Free what dead connections left behind and report damaged
            // entries once; neither stops the server. (The reaper samples
            // every quarter lease timeout at most.)
            match reaper.scan(shared, lock.as_mut(), lock_timeout) {
                Ok(events) => events.into_iter().for_each(|r| log(r.to_string())),
                Err(e) => log(format!("reclaiming dead entries: {e}")),
            }
            let pending = pending_for(shared, &me.name)?;
            if pending.is_empty() {
                poller.wait();
                continue;
            }
            poller.reset();
            for c in pending {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (peer, proof) =
                    match accept_with(shared, lock.as_mut(), me, c, lock_timeout, auth)? {
                        Accepted::Gone => continue,
                        Accepted::Refused { requestor, reason } => {
                            log(format!(
                                "refused connection {} from {:?}: {reason}",
                                c.slot, requestor
                            ));
                            continue;
                        }
                        Accepted::Yes { entry, proof } => (entry.pro_requestor, proof),
                    };
                log(format!(
                    "accepted connection {} from {:?} (generation {}{})",
                    c.slot,
                    peer,
                    c.generation,
                    match &proof {
                        Some(p) if p.sealed => format!(", key {}, sealed", p.client_key()),
                        Some(p) => format!(", key {}", p.client_key()),
                        None => String::new(),
                    }
                ));
                let conn = shared.reopen()?;
                let mut cleanup = shared.reopen()?;
                let locks = locks.clone();
                let me = me.clone();
                scope.spawn(move || {
                    let r = serve_connection(conn, c, &me, &peer, proof, root, stop);
                    match &r {
                        Ok(()) => log(format!("connection {} closed", c.slot)),
                        Err(Error::Interrupted) => {
                            log(format!("connection {}: closed (stopping)", c.slot))
                        }
                        Err(e) => log(format!("connection {}: {e}", c.slot)),
                    }
                    if r.is_err() {
                        // The client is gone or we are stopping: free its
                        // entry so the slot is reusable.
                        if let Ok(mut l) = locks() {
                            let _ = close(&mut cleanup, l.as_mut(), c, lock_timeout);
                        }
                    }
                });
            }
        }
        Ok(())
    });
    // Mark the registration's lease closed and free its entry (or, if it
    // was lost, say to whom).
    registration.finish(shared, lock.as_mut(), lock_timeout, served, log)
}
