//! A TCP "cable" between one host and the target that the rig can pull.
//!
//! **For**: crashing a host the way a power loss or a cable pull does, for
//! hosts that reach the target through TCP on this machine (the qemu
//! guests). The relay forwards bytes both ways until [`Cable::cut`]; from
//! then on it forwards nothing in either direction and closes nothing, so
//! the target keeps the host's session (and its SCSI-2 reservation) as it
//! would after a real crash: no FIN, no RST, until the cable is dropped at
//! the end of the scenario.
//!
//! **Not for**: hosts in network namespaces: there the rig takes the host's
//! link down instead ([`crate::netns`]).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Error;

/// A relay from a local listening port to `upstream`.
#[derive(Debug)]
pub struct Cable {
    local: SocketAddr,
    cut: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// Every socket the relay opened, shut down when the cable is dropped.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cable {
    /// Listens on `127.0.0.1:0` and relays each accepted connection to
    /// `upstream` (`HOST:PORT`).
    pub fn new(upstream: &str) -> Result<Cable, Error> {
        let io = |action: &'static str, source| Error::Io {
            action,
            path: upstream.into(),
            source,
        };
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| io("listen for a relay to", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| io("listen for a relay to", e))?;
        let cable = Cable {
            local,
            cut: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicBool::new(false)),
            sockets: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, closed, sockets) = (
            Arc::clone(&cable.cut),
            Arc::clone(&cable.closed),
            Arc::clone(&cable.sockets),
        );
        let upstream = upstream.to_owned();
        std::thread::Builder::new()
            .name("hil-cable".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if closed.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(down) = conn else { continue };
                    if cut.load(Ordering::Relaxed) {
                        // A pulled cable carries no new connection either;
                        // keep it open and silent.
                        push(&sockets, &down);
                        continue;
                    }
                    let Ok(up) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = down.set_nodelay(true);
                    push(&sockets, &up);
                    push(&sockets, &down);
                    for (from, to) in [(&down, &up), (&up, &down)] {
                        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                            continue;
                        };
                        let cut = Arc::clone(&cut);
                        let _ = std::thread::Builder::new()
                            .name("hil-cable-pump".into())
                            .spawn(move || pump(from, to, &cut));
                    }
                }
            })
            .map_err(|source| Error::Spawn {
                command: "the relay thread".into(),
                source,
            })?;
        Ok(cable)
    }

    /// Where the host connects instead of the target, `127.0.0.1:PORT`.
    pub fn local(&self) -> String {
        self.local.to_string()
    }

    /// Pulls the cable: nothing passes any more, nothing is closed.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

fn push(sockets: &Mutex<Vec<TcpStream>>, s: &TcpStream) {
    if let Ok(c) = s.try_clone() {
        sockets.lock().unwrap_or_else(|p| p.into_inner()).push(c);
    }
}

/// Copies `from` to `to` until EOF or an error; after a cut it discards
/// what arrives and never passes an EOF on.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                if !cut.load(Ordering::Relaxed) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if cut.load(Ordering::Relaxed) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                if !cut.load(Ordering::Relaxed) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
        }
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `closed` and ends.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn relays_until_cut_then_passes_nothing_and_closes_nothing() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let cable = Cable::new(&server.local_addr().unwrap().to_string()).unwrap();
        let mut client = TcpStream::connect(cable.local()).unwrap();
        let (mut far, _) = server.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");

        cable.cut();
        client.write_all(b"lost").unwrap();
        drop(client); // the host dies: its FIN must not reach the far end
        far.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let e = far.read(&mut got).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        );
        // Dropping the cable ends the far side's connection.
        drop(cable);
        far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(far.read(&mut got).unwrap(), 0);
    }
}
