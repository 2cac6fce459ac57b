//! Appendix A over the rings: the client side (`put`, `get`, `dir`, `cd`,
//! `pwd`, `close`) and the connector that serves any number of connections.
//!
//! Every exchange is strict request/response (the ring needs it: a side
//! acknowledges only while it receives). A file moves as one data message;
//! its BLAKE3 follows in a trailer, and the receiver renames its temporary
//! file into place only when the digest matches, so a failed or interrupted
//! transfer never leaves a partial file under the target name.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fts_layout::Role;
use fts_lock::TableLock;
use fts_ring::{MessageSource, Poller, RingPort};

use crate::lease::{Heartbeat, PeerWatch};
use crate::proto::{
    decode_request, decode_response, encode_request, encode_response, to_wire_text, DirEntry,
    EntryKind, ErrorCode, FromWireText, Request, Response, MAX_CONTROL_MESSAGE,
};
use crate::{
    accept, claim, close, pending_for, wait_accepted, Claim, Error, Identity, Root, Shared,
};

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
) -> Result<fts_ring::Liveness<'d>, Error> {
    let mut watch_dev = shared.reopen()?;
    let mut watch = PeerWatch::new(&watch_dev, claim, peer);
    let mut last = std::time::Instant::now();
    Ok(Box::new(move || {
        // Reading the lease costs one I/O: at most every 50 ms.
        if last.elapsed() < Duration::from_millis(50) {
            return Ok(());
        }
        last = std::time::Instant::now();
        watch
            .check(&mut watch_dev)
            .map_err(|e| fts_ring::Error::PeerGone {
                slot: claim.slot,
                reason: e.to_string(),
            })
    }))
}

fn recv_control(port: &mut RingPort<'_>) -> Result<Vec<u8>, Error> {
    let mut msg = Vec::new();
    port.recv(&mut |chunk: &[u8]| {
        if msg.len() + chunk.len() > MAX_CONTROL_MESSAGE {
            return Err(SinkError(format!(
                "control message larger than {MAX_CONTROL_MESSAGE} bytes"
            )));
        }
        msg.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(msg)
}

fn send_bytes(port: &mut RingPort<'_>, mut bytes: Vec<u8>) -> Result<(), Error> {
    let len = bytes.len() as u64;
    port.send(&mut bytes, len)?;
    Ok(())
}

fn hash_file(path: &Path) -> Result<([u8; 32], u64), Error> {
    let mut f = File::open(path).map_err(|source| Error::Local {
        op: "open",
        path: path.display().to_string(),
        source,
    })?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|source| Error::Local {
        op: "read",
        path: path.display().to_string(),
        source,
    })?;
    Ok((*h.finalize().as_bytes(), n))
}

/// A temporary file next to its target, removed unless committed.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn new(target: &Path) -> std::io::Result<TempFile> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dir.join(format!(
            ".{name}.fts-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// fsyncs and moves into place; without `replace`, never clobbers.
    fn commit(mut self, target: &Path, replace: bool) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        if replace {
            std::fs::rename(&self.path, target)?;
        } else {
            std::fs::hard_link(&self.path, target)?;
            std::fs::remove_file(&self.path)?;
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Receives a data message into `target` (via a temporary file), checking
/// the BLAKE3 of the wire bytes against `expect()` before the rename.
fn receive_file(
    port: &mut RingPort<'_>,
    target: &Path,
    text: bool,
) -> Result<(TempFile, [u8; 32], u64), Error> {
    let local = |op, source| Error::Local {
        op,
        path: target.display().to_string(),
        source,
    };
    let mut tmp = TempFile::new(target).map_err(|e| local("create a temporary file for", e))?;
    let mut hasher = blake3::Hasher::new();
    let mut conv = FromWireText::new();
    let mut out = Vec::new();
    let mut write_err = None;
    let info = {
        let file = tmp
            .file
            .as_mut()
            .ok_or_else(|| Error::Protocol("temporary file closed".into()))?;
        port.recv(&mut |chunk: &[u8]| {
            hasher.update(chunk);
            let res = if text {
                out.clear();
                conv.push(chunk, &mut out);
                file.write_all(&out)
            } else {
                file.write_all(chunk)
            };
            res.map_err(|e| {
                let msg = e.to_string();
                write_err = Some(e);
                SinkError(msg)
            })
        })
    };
    if let Some(e) = write_err {
        return Err(local("write", e));
    }
    let info = info?;
    if text {
        out.clear();
        conv.finish(&mut out);
        if let Some(f) = tmp.file.as_mut() {
            f.write_all(&out).map_err(|e| local("write", e))?;
        }
    }
    Ok((tmp, *hasher.finalize().as_bytes(), info.len))
}

/// An open connection seen from the initiator.
#[derive(Debug)]
pub struct Client<'d> {
    port: RingPort<'d>,
    replace_next: bool,
    text: bool,
}

fn remote(resp: Response) -> Error {
    match resp {
        Response::Error { code, message } => Error::Remote { code, message },
        other => Error::Protocol(format!("unexpected reply {other:?}")),
    }
}

impl Client<'_> {
    fn call(&mut self, req: &Request) -> Result<Response, Error> {
        send_bytes(&mut self.port, encode_request(req))?;
        let msg = recv_control(&mut self.port)?;
        decode_response(&msg).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// `replace`: the next get or put may overwrite.
    pub fn set_replace(&mut self) {
        self.replace_next = true;
    }

    /// Text mode (the patent's `PRO_TYPE_TEXT`): line endings are converted.
    pub fn set_text(&mut self, text: bool) {
        self.text = text;
    }

    /// `put local remote`: returns the bytes sent.
    pub fn put(&mut self, local: &Path, remote_path: &str, replace: bool) -> Result<u64, Error> {
        let replace = replace || std::mem::take(&mut self.replace_next);
        let lpath = local.display().to_string();
        let (mut data, digest, size): (Box<dyn MessageSource>, [u8; 32], u64) = if self.text {
            let raw = std::fs::read(local).map_err(|source| Error::Local {
                op: "read",
                path: lpath.clone(),
                source,
            })?;
            let wire = to_wire_text(&raw);
            let d = *blake3::hash(&wire).as_bytes();
            let n = wire.len() as u64;
            (Box::new(wire), d, n)
        } else {
            let (d, n) = hash_file(local)?;
            let f = File::open(local).map_err(|source| Error::Local {
                op: "open",
                path: lpath.clone(),
                source,
            })?;
            (Box::new(f), d, n)
        };
        match self.call(&Request::Put {
            path: remote_path.into(),
            size,
            replace,
            text: self.text,
        })? {
            Response::Ok => {}
            other => return Err(remote(other)),
        }
        self.port.send(data.as_mut(), size)?;
        match self.call(&Request::Commit { blake3: digest })? {
            Response::Ok => Ok(size),
            other => Err(remote(other)),
        }
    }

    /// `get remote local`: returns the bytes received.
    pub fn get(&mut self, remote_path: &str, local: &Path, replace: bool) -> Result<u64, Error> {
        let replace = replace || std::mem::take(&mut self.replace_next);
        if !replace && local.symlink_metadata().is_ok() {
            return Err(Error::LocalExists {
                path: local.display().to_string(),
            });
        }
        match self.call(&Request::Get {
            path: remote_path.into(),
            text: self.text,
        })? {
            Response::Ready { .. } => {}
            other => return Err(remote(other)),
        }
        let (tmp, got, len) = receive_file(&mut self.port, local, self.text)?;
        let msg = recv_control(&mut self.port)?;
        match decode_response(&msg).map_err(|e| Error::Protocol(e.to_string()))? {
            Response::Digest { blake3 } if blake3 == got => {}
            Response::Digest { .. } => {
                return Err(Error::Integrity {
                    path: local.display().to_string(),
                })
            }
            other => return Err(remote(other)),
        }
        tmp.commit(local, replace).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::LocalExists {
                    path: local.display().to_string(),
                }
            } else {
                Error::Local {
                    op: "rename into place",
                    path: local.display().to_string(),
                    source,
                }
            }
        })?;
        Ok(len)
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

/// `open server`, run `f` on the connection, then `close` (always).
pub fn with_client<R>(
    shared: &mut Shared,
    lock: &mut dyn TableLock,
    me: &Identity,
    server: &str,
    t: ClientTimeouts,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let c = claim(shared, lock, me, server, t.lock)?;
    wait_accepted(shared, lock, c, server, t.connect, t.lock)?;
    let result = run_client(shared, c, me, f);
    let closed = close(shared, lock, c, t.lock);
    let r = result?;
    closed?;
    Ok(r)
}

fn run_client<R>(
    shared: &mut Shared,
    c: Claim,
    me: &Identity,
    f: impl FnOnce(&mut Client<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let hb = Heartbeat::start(shared, c, Role::Initiator, me.host)?;
    let live = liveness(shared, c, Role::Connector)?;
    let fence = crate::ring_fence(shared, c)?;
    let geo = shared.geometry().clone();
    let id = shared.mcb().layout_id();
    let r = {
        let mut port = RingPort::new(
            shared.device(),
            geo,
            c.slot,
            Role::Initiator,
            c.generation,
            id,
        )?;
        port.set_fence(fence);
        port.init_table()?;
        port.set_liveness(live);
        let mut client = Client {
            port,
            replace_next: false,
            text: false,
        };
        let r = f(&mut client);
        if r.is_ok() {
            client.call(&Request::Close).map(|_| ())?;
        }
        r
    };
    hb.stop()?;
    r
}

fn err_resp(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

fn io_resp(what: &str, e: &std::io::Error) -> Response {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::Permission,
        std::io::ErrorKind::AlreadyExists => ErrorCode::Exists,
        _ => ErrorCode::Io,
    };
    err_resp(code, format!("{what}: {e}"))
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn listing(dir: &Path, shown: &str) -> Response {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => return io_resp(shown, &e),
    };
    let mut entries: Vec<DirEntry> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = e.path().symlink_metadata().ok()?;
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                EntryKind::Symlink
            } else if ft.is_dir() {
                EntryKind::Dir
            } else if ft.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            Some(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                size: m.len(),
                kind,
                mtime_ns: mtime_ns(&m),
            })
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Response::Listing { entries }
}

/// Serves one accepted connection until the client closes or dies.
fn serve_connection(
    mut shared: Shared,
    c: Claim,
    me: &Identity,
    root_dir: &Path,
) -> Result<(), Error> {
    let hb = Heartbeat::start(&shared, c, Role::Connector, me.host)?;
    let live = liveness(&shared, c, Role::Initiator)?;
    let fence = crate::ring_fence(&shared, c)?;
    let geo = shared.geometry().clone();
    let id = shared.mcb().layout_id();
    let r = (|| {
        let mut root = Root::new(root_dir).map_err(|source| Error::Local {
            op: "open root",
            path: root_dir.display().to_string(),
            source,
        })?;
        let mut port = RingPort::new(
            shared.device(),
            geo,
            c.slot,
            Role::Connector,
            c.generation,
            id,
        )?;
        port.set_fence(fence);
        port.init_table()?;
        port.set_liveness(live);
        port.set_poller(Poller::new(Duration::from_millis(5)));
        loop {
            let msg = recv_control(&mut port)?;
            let req = match decode_request(&msg) {
                Ok(r) => r,
                Err(e) => {
                    send_bytes(
                        &mut port,
                        encode_response(&err_resp(ErrorCode::BadRequest, e.to_string())),
                    )?;
                    continue;
                }
            };
            let resp = match req {
                Request::Close => {
                    send_bytes(&mut port, encode_response(&Response::Ok))?;
                    return Ok(());
                }
                Request::Pwd => Response::Cwd { path: root.pwd() },
                Request::Cd { path } => match root.cd(&path) {
                    Ok(()) => Response::Cwd { path: root.pwd() },
                    Err(e) => e.to_response(),
                },
                Request::Dir { path } => {
                    let shown = path.clone().unwrap_or_else(|| ".".into());
                    match root.resolve_existing(&shown) {
                        Ok(p) => listing(&p, &shown),
                        Err(e) => e.to_response(),
                    }
                }
                Request::Commit { .. } => err_resp(ErrorCode::BadRequest, "commit without put"),
                Request::Get { path, text } => {
                    serve_get(&mut port, &root, &path, text)?;
                    continue;
                }
                Request::Put {
                    path,
                    size: _,
                    replace,
                    text,
                } => {
                    serve_put(&mut port, &root, &path, replace, text)?;
                    continue;
                }
            };
            send_bytes(&mut port, encode_response(&resp))?;
        }
    })();
    match &r {
        Err(Error::Ring(fts_ring::Error::PeerGone { .. })) => drop(hb), // peer dead: our lease expires too
        _ => hb.stop()?,
    }
    r
}

fn serve_get(port: &mut RingPort<'_>, root: &Root, path: &str, text: bool) -> Result<(), Error> {
    let p = match root.resolve_existing(path) {
        Ok(p) => p,
        Err(e) => return send_bytes(port, encode_response(&e.to_response())),
    };
    let meta = match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => {
            return send_bytes(
                port,
                encode_response(&err_resp(
                    ErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                )),
            )
        }
        Ok(m) => m,
        Err(e) => return send_bytes(port, encode_response(&io_resp(path, &e))),
    };
    let (mut src, digest, size): (Box<dyn MessageSource>, [u8; 32], u64) = if text {
        match std::fs::read(&p) {
            Ok(raw) => {
                let wire = to_wire_text(&raw);
                (
                    Box::new(wire.clone()),
                    *blake3::hash(&wire).as_bytes(),
                    wire.len() as u64,
                )
            }
            Err(e) => return send_bytes(port, encode_response(&io_resp(path, &e))),
        }
    } else {
        match (hash_file(&p), File::open(&p)) {
            (Ok((d, n)), Ok(f)) => (Box::new(f), d, n),
            (Err(_), _) | (_, Err(_)) => {
                return send_bytes(
                    port,
                    encode_response(&err_resp(ErrorCode::Io, format!("{path}: cannot read"))),
                )
            }
        }
    };
    send_bytes(
        port,
        encode_response(&Response::Ready {
            size,
            mtime_ns: mtime_ns(&meta),
        }),
    )?;
    port.send(src.as_mut(), size)?;
    send_bytes(port, encode_response(&Response::Digest { blake3: digest }))
}

fn serve_put(
    port: &mut RingPort<'_>,
    root: &Root,
    path: &str,
    replace: bool,
    text: bool,
) -> Result<(), Error> {
    let target = match root.resolve_new(path) {
        Ok(p) => p,
        Err(e) => return send_bytes(port, encode_response(&e.to_response())),
    };
    match target.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            return send_bytes(
                port,
                encode_response(&err_resp(
                    ErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                )),
            )
        }
        Ok(_) if !replace => {
            return send_bytes(
                port,
                encode_response(&err_resp(
                    ErrorCode::Exists,
                    format!("{path} exists; use replace to overwrite it"),
                )),
            )
        }
        _ => {}
    }
    send_bytes(port, encode_response(&Response::Ok))?;
    let received = receive_file(port, &target, text);
    // Always read the commit, so both sides stay in step.
    let msg = recv_control(port)?;
    let (tmp, got, _) = match received {
        Ok(x) => x,
        Err(Error::Local { op, source, .. }) => {
            return send_bytes(
                port,
                encode_response(&io_resp(&format!("{op} {path}"), &source)),
            );
        }
        Err(e) => return Err(e),
    };
    let resp = match decode_request(&msg) {
        Ok(Request::Commit { blake3 }) if blake3 == got => match tmp.commit(&target, replace) {
            Ok(()) => Response::Ok,
            Err(e) => io_resp(path, &e),
        },
        Ok(Request::Commit { .. }) => err_resp(
            ErrorCode::Integrity,
            format!("{path}: BLAKE3 mismatch; file discarded"),
        ),
        _ => err_resp(ErrorCode::BadRequest, "expected commit after put data"),
    };
    send_bytes(port, encode_response(&resp))
}

/// The connector: accepts connections for `me.name` until `stop` is set,
/// one thread (with its own device handle) per connection.
pub fn serve(
    shared: &mut Shared,
    locks: LockFactory,
    me: &Identity,
    root: &Path,
    lock_timeout: Duration,
    stop: &AtomicBool,
    log: &(dyn Fn(String) + Sync),
) -> Result<(), Error> {
    let mut lock = locks()?;
    let mut poller = Poller::new(Duration::from_millis(50));
    let mut reaper = crate::Reaper::new(shared);
    std::thread::scope(|scope| -> Result<(), Error> {
        while !stop.load(Ordering::Relaxed) {
            // Free what dead connections left behind and report damaged
            // entries once; neither stops the server.
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
                if !accept(shared, lock.as_mut(), me, c, lock_timeout)? {
                    continue;
                }
                log(format!(
                    "accepted connection {} (generation {})",
                    c.slot, c.generation
                ));
                let conn = shared.reopen()?;
                let mut cleanup = shared.reopen()?;
                let locks = locks.clone();
                let me = me.clone();
                scope.spawn(move || {
                    let r = serve_connection(conn, c, &me, root);
                    if let Err(e) = &r {
                        log(format!("connection {}: {e}", c.slot));
                        // The client is gone: free its entry so the slot is reusable.
                        if let Ok(mut l) = locks() {
                            let _ = close(&mut cleanup, l.as_mut(), c, lock_timeout);
                        }
                    } else {
                        log(format!("connection {} closed", c.slot));
                    }
                });
            }
        }
        Ok(())
    })
}
