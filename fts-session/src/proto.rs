//! Command/response framing for the Appendix A commands, carried as ring
//! messages.
//!
//! Each control message is one ring message: the 4-byte prefix
//! [`MAGIC`] (`b"FTS1"`, magic plus protocol version) followed by a JSON
//! document (serde_json, externally tagged enums). File contents are *not*
//! carried in control messages; they travel as separate data messages:
//!
//! * put: client sends [`Request::Put`], server replies [`Response::Ok`] (or
//!   an error), client sends the data message, then [`Request::Commit`]
//!   with the BLAKE3 digest of the bytes as sent; server replies `Ok` or
//!   `Error { code: Integrity, .. }`.
//! * get: client sends [`Request::Get`], server replies
//!   [`Response::Ready`], then the data message, then [`Response::Digest`].
//! * resumed put (`put --resume`, `reput`; binary mode only): client sends
//!   [`Request::PutResume`]; the server replies [`Response::Partial`] with
//!   the length and BLAKE3 of the partial file it kept from an earlier
//!   attempt by the same client for the same target (length 0 if none);
//!   the client compares the digest with its own first `offset` bytes and
//!   sends [`Request::Resume`] with that offset, or 0 to start over; the
//!   server replies `Ok`, then the data message carries the rest (`size -
//!   offset` bytes) and [`Request::Commit`] the BLAKE3 of the **whole**
//!   file.
//! * resumed get (`get --resume`, `reget`; binary mode only): client sends
//!   [`Request::GetResume`] with the length and BLAKE3 of the partial file
//!   it kept; the server replies [`Response::ReadyFrom`] with the offset it
//!   sends from (that length if its own first bytes have that digest, else
//!   0), the data message carries the rest and [`Response::Digest`] the
//!   BLAKE3 of the whole file.
//!
//! Every request gets a reply: a request the server cannot carry out (no
//! space, a name its file system refuses, a FIFO or device node) is
//! answered with [`Response::Error`] before any data moves, or, when the
//! failure comes while data arrives, after the data message and the
//! commit, so both sides stay in step.
//!
//! New variants (the resume messages, [`ErrorCode::NoSpace`],
//! [`ErrorCode::NotRegular`], [`ErrorCode::Busy`]) were added without a
//! new version prefix: messages that existed before are encoded exactly as
//! before; a peer that predates them rejects a new one as malformed.
//!
//! Control messages are small: decoders reject anything longer than
//! [`MAX_CONTROL_MESSAGE`] bytes. Everything here is pure (no I/O) and the
//! decoders never panic on arbitrary input.
//!
//! Text mode (the patent's `PRO_TYPE_TEXT`): data is sent with CRLF line
//! ends ([`to_wire_text`]) and converted back to LF on receipt with the
//! streaming [`FromWireText`].

use serde::{Deserialize, Serialize};

/// Magic plus protocol version prefixed to every control message.
pub const MAGIC: [u8; 4] = *b"FTS1";

/// Largest control message (prefix included) a decoder accepts: 64 KiB.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// A client → server command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Request {
    /// Store a file (`put`, or `replace` when `replace` is set). The data
    /// message and then [`Request::Commit`] follow.
    Put {
        /// Remote path, relative to the server's current directory.
        path: String,
        /// Number of bytes in the data message.
        size: u64,
        /// Overwrite an existing file (`replace`).
        replace: bool,
        /// Text mode: the data is CRLF-encoded on the wire.
        text: bool,
    },
    /// Fetch a file (`get`).
    Get {
        /// Remote path, relative to the server's current directory.
        path: String,
        /// Text mode: send the data CRLF-encoded.
        text: bool,
    },
    /// List a directory (`dir [name]`); `None` lists the current directory.
    Dir {
        /// Remote directory, relative to the server's current directory.
        path: Option<String>,
    },
    /// Change the server's current directory (`cd`).
    Cd {
        /// Remote directory, relative to the server's current directory.
        path: String,
    },
    /// Ask for the server's current directory.
    Pwd,
    /// Sent after a put's data message: BLAKE3 of the bytes as sent.
    Commit {
        /// BLAKE3 digest, hex-encoded in JSON.
        #[serde(with = "hex32")]
        blake3: [u8; 32],
    },
    /// End the session (`close` / `quit`).
    Close,
    /// Store a file, continuing a partial copy the server kept from an
    /// earlier attempt (`put --resume`, `reput`). Binary mode only. The
    /// server replies [`Response::Partial`].
    PutResume {
        /// Remote path, relative to the server's current directory.
        path: String,
        /// Size of the whole file.
        size: u64,
        /// Overwrite an existing file.
        replace: bool,
    },
    /// After [`Response::Partial`]: the byte offset the data message starts
    /// at, either the partial's length (its digest matched the client's
    /// first bytes) or 0 (start over).
    Resume {
        /// Where the data message starts in the file.
        offset: u64,
    },
    /// Fetch a file, continuing a partial copy the client kept (`get
    /// --resume`, `reget`). Binary mode only. The server replies
    /// [`Response::ReadyFrom`].
    GetResume {
        /// Remote path, relative to the server's current directory.
        path: String,
        /// Length of the client's partial copy.
        offset: u64,
        /// BLAKE3 of those `offset` bytes, hex-encoded in JSON.
        #[serde(with = "hex32")]
        blake3: [u8; 32],
    },
}

/// A server → client reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Response {
    /// The command succeeded (or, for put, the server is ready for data).
    Ok,
    /// Reply to [`Request::Get`]; the data message follows.
    Ready {
        /// Number of bytes in the data message (after text encoding).
        size: u64,
        /// File modification time, nanoseconds since the Unix epoch.
        mtime_ns: u64,
    },
    /// Trailer after a get's data message: BLAKE3 of the bytes as sent.
    Digest {
        /// BLAKE3 digest, hex-encoded in JSON.
        #[serde(with = "hex32")]
        blake3: [u8; 32],
    },
    /// Reply to [`Request::Dir`].
    Listing {
        /// Directory entries.
        entries: Vec<DirEntry>,
    },
    /// Reply to [`Request::Pwd`] / [`Request::Cd`]: `/`-style path relative
    /// to the server's root.
    Cwd {
        /// The current directory.
        path: String,
    },
    /// Reply to [`Request::PutResume`]: what the server kept from an
    /// earlier attempt (`offset` 0 and the digest of nothing if nothing).
    Partial {
        /// Length of the partial copy.
        offset: u64,
        /// BLAKE3 of those bytes, hex-encoded in JSON.
        #[serde(with = "hex32")]
        blake3: [u8; 32],
    },
    /// Reply to [`Request::GetResume`]; the data message (`size - offset`
    /// bytes) follows, then [`Response::Digest`] of the whole file.
    ReadyFrom {
        /// Size of the whole file.
        size: u64,
        /// File modification time, nanoseconds since the Unix epoch.
        mtime_ns: u64,
        /// Where the data message starts: the client's partial length if
        /// the digests matched, else 0.
        offset: u64,
    },
    /// The command failed.
    Error {
        /// Machine-readable class.
        code: ErrorCode,
        /// Human-readable detail (never contains server-absolute paths).
        message: String,
    },
}

/// One entry of a [`Response::Listing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// File name (no directory part).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Kind of entry (symlinks are not followed).
    pub kind: EntryKind,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// Kind of a [`DirEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// Class of a [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The path does not exist.
    NotFound,
    /// The target exists and `replace` was not requested.
    Exists,
    /// Permission denied.
    Permission,
    /// The path would leave the server's root (absolute, `..` escape,
    /// symlink pointing outside).
    OutsideRoot,
    /// A directory was required.
    NotADirectory,
    /// A file was required but the path is a directory.
    IsADirectory,
    /// Malformed or out-of-sequence request.
    BadRequest,
    /// Digest mismatch after a transfer.
    Integrity,
    /// Other I/O failure.
    Io,
    /// The server's file system is full (ENOSPC) or the quota is exhausted
    /// (EDQUOT).
    NoSpace,
    /// The path is a FIFO, socket or device node: the server serves regular
    /// files and directories only.
    NotRegular,
    /// Another transfer of the same target by the same client holds the
    /// partial copy.
    Busy,
}

impl ErrorCode {
    /// A short description for messages, e.g. "no space left on the server".
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not found on the server",
            ErrorCode::Exists => "exists on the server",
            ErrorCode::Permission => "permission denied on the server",
            ErrorCode::OutsideRoot => "outside the server's root",
            ErrorCode::NotADirectory => "not a directory on the server",
            ErrorCode::IsADirectory => "a directory on the server",
            ErrorCode::BadRequest => "the server refused the request",
            ErrorCode::Integrity => "integrity check failed on the server",
            ErrorCode::Io => "I/O error on the server",
            ErrorCode::NoSpace => "no space left on the server",
            ErrorCode::NotRegular => "not a regular file on the server",
            ErrorCode::Busy => "busy on the server",
        }
    }
}

/// Why a control message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// Shorter than the 4-byte prefix.
    #[error("control message too short ({len} bytes): missing the FTS1 prefix")]
    Truncated {
        /// Message length.
        len: usize,
    },
    /// The prefix is not `FTS1`.
    #[error("not an fts control message or unsupported protocol version: prefix {found:?}, expected \"FTS1\"")]
    BadMagic {
        /// The first four bytes, lossily as text.
        found: String,
    },
    /// Longer than [`MAX_CONTROL_MESSAGE`].
    #[error("control message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Message length.
        len: usize,
        /// [`MAX_CONTROL_MESSAGE`].
        max: usize,
    },
    /// The JSON body is malformed or does not describe a known message.
    #[error("malformed control message body: {0}")]
    Json(#[from] serde_json::Error),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    // Serialising these types (string keys, no maps with non-string keys)
    // cannot fail; fall back to an empty body rather than panicking.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(MAGIC.len());
    }
    out
}

fn decode<'a, T: Deserialize<'a>>(msg: &'a [u8]) -> Result<T, ProtoError> {
    if msg.len() > MAX_CONTROL_MESSAGE {
        return Err(ProtoError::TooLarge {
            len: msg.len(),
            max: MAX_CONTROL_MESSAGE,
        });
    }
    let Some((prefix, body)) = msg.split_first_chunk::<4>() else {
        return Err(ProtoError::Truncated { len: msg.len() });
    };
    if *prefix != MAGIC {
        return Err(ProtoError::BadMagic {
            found: String::from_utf8_lossy(prefix).into_owned(),
        });
    }
    Ok(serde_json::from_slice(body)?)
}

/// Encodes a request as `FTS1` + JSON.
pub fn encode_request(req: &Request) -> Vec<u8> {
    encode(req)
}

/// Decodes a request; never panics.
pub fn decode_request(msg: &[u8]) -> Result<Request, ProtoError> {
    decode(msg)
}

/// Encodes a response as `FTS1` + JSON.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    encode(resp)
}

/// Decodes a response; never panics.
pub fn decode_response(msg: &[u8]) -> Result<Response, ProtoError> {
    decode(msg)
}

/// Text mode, sending side: LF → CRLF; an LF already preceded by CR is
/// left alone.
pub fn to_wire_text(data: &[u8]) -> Vec<u8> {
    let extra = data.iter().filter(|&&b| b == b'\n').count();
    let mut out = Vec::with_capacity(data.len() + extra);
    let mut prev = None;
    for &b in data {
        if b == b'\n' && prev != Some(b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        prev = Some(b);
    }
    out
}

/// Text mode, receiving side: streaming CRLF → LF.
///
/// Feed chunks with [`FromWireText::push`]; a CR at the end of a chunk is
/// held back until the next byte shows whether it starts a CRLF. Call
/// [`FromWireText::finish`] at end of data to flush a held CR. A lone CR
/// (not followed by LF) is passed through unchanged.
#[derive(Debug, Default, Clone)]
pub struct FromWireText {
    pending_cr: bool,
}

impl FromWireText {
    /// A converter with nothing held back.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts `chunk`, appending the output to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + 1);
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    out.push(b'\r');
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
    }

    /// Ends the stream, flushing a held-back CR into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }

    /// One-shot conversion of a complete buffer.
    pub fn convert_all(data: &[u8]) -> Vec<u8> {
        let mut conv = Self::new();
        let mut out = Vec::with_capacity(data.len());
        conv.push(data, &mut out);
        conv.finish(&mut out);
        out
    }
}

/// Serde helper: `[u8; 32]` as a 64-character lowercase hex string.
mod hex32 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(64);
        for &b in bytes {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.serialize_str(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let raw = text.as_bytes();
        if raw.len() != 64 {
            return Err(D::Error::custom(format!(
                "blake3 digest must be 64 hex digits, got {}",
                raw.len()
            )));
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
            let hi = nibble(pair[0]).ok_or_else(|| D::Error::custom("non-hex digit in digest"))?;
            let lo = nibble(pair[1]).ok_or_else(|| D::Error::custom("non-hex digit in digest"))?;
            *slot = (hi << 4) | lo;
        }
        Ok(out)
    }

    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn resume_messages_round_trip() {
        let d = [0xabu8; 32];
        for req in [
            Request::PutResume {
                path: "a/b".into(),
                size: 7,
                replace: true,
            },
            Request::Resume { offset: 3 },
            Request::GetResume {
                path: "x".into(),
                offset: 1 << 40,
                blake3: d,
            },
        ] {
            assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
        }
        for resp in [
            Response::Partial {
                offset: 5,
                blake3: d,
            },
            Response::ReadyFrom {
                size: 9,
                mtime_ns: 1,
                offset: 5,
            },
        ] {
            assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
        }
        for code in [ErrorCode::NoSpace, ErrorCode::NotRegular, ErrorCode::Busy] {
            let resp = Response::Error {
                code,
                message: code.describe().into(),
            };
            assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
        }
    }

    /// Messages that existed before the resume messages are encoded
    /// exactly as before: older peers keep understanding them.
    #[test]
    fn older_messages_keep_their_encoding() {
        let put = Request::Put {
            path: "f".into(),
            size: 1,
            replace: false,
            text: false,
        };
        assert_eq!(
            encode_request(&put),
            br#"FTS1{"Put":{"path":"f","size":1,"replace":false,"text":false}}"#
        );
        let ready = Response::Ready {
            size: 2,
            mtime_ns: 3,
        };
        assert_eq!(
            encode_response(&ready),
            br#"FTS1{"Ready":{"size":2,"mtime_ns":3}}"#
        );
        assert_eq!(
            encode_response(&Response::Error {
                code: ErrorCode::NoSpace,
                message: "m".into()
            }),
            br#"FTS1{"Error":{"code":"NoSpace","message":"m"}}"#
        );
    }
}
