//! Keys, trust lists and the handshake that authenticates both sides of a
//! connection (`pro_auth_alg` 2, docs/FORMAT.md "Authentication").
//!
//! Each host has an Ed25519 key (`fts keygen`). A server admits a client
//! whose public key is in its authorized-keys list (or, with no list, the
//! server's own key: the one-key-file setup); a client talks only to a
//! server whose key is in its known-servers list for that name (or, with
//! no list, its own key). Both prove possession by signing one transcript
//! that binds the layout, the slot, its generation, both names, a fresh
//! nonce from each side and an ephemeral X25519 key from each side, so
//! nothing copied from the device can be replayed into another
//! connection. The X25519 agreement gives each connection its own pair of
//! segment keys ([`SessionKeys`]).
//!
//! **Nothing secret reaches the device**: the entry holds public keys,
//! nonces, ephemeral public keys and signatures only.
//!
//! **Not for**: where the fields live on disk (fts-layout) or when they are
//! written (connect.rs, lease.rs).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use fts_layout::{PidEntry, Role, AUTH_ED25519, AUTH_FLAG_ENCRYPT_ASKED, AUTH_FLAG_SEALED};
use uuid::Uuid;
use x25519_dalek::{PublicKey as KxPublic, StaticSecret};

use crate::Error;

/// The public-key line prefix (`fts-ed25519 BASE64 [comment]`).
pub const PUBLIC_PREFIX: &str = "fts-ed25519";
/// The secret-key file's prefix (`fts-ed25519-secret BASE64 [comment]`).
const SECRET_PREFIX: &str = "fts-ed25519-secret";
/// Labels of the two signatures over the transcript.
const LABEL_CONNECTOR: &[u8] = b"fts-auth-v2 connector\0";
const LABEL_INITIATOR: &[u8] = b"fts-auth-v2 initiator\0";
/// Key-derivation contexts (BLAKE3 `derive_key`).
const KDF_I2C: &str = "fts 2026-12-01 sealed segments, initiator to connector";
const KDF_C2I: &str = "fts 2026-12-01 sealed segments, connector to initiator";

/// `pro_con_rc` when the server refuses: the client's key is not trusted.
pub const RC_KEY_NOT_TRUSTED: i32 = fts_layout::CON_RC_AUTH_FAILED;
/// `pro_con_rc`: the server requires authentication and the client sent none.
pub const RC_AUTH_REQUIRED: i32 = 4;
/// `pro_con_rc`: the request's authentication fields are malformed.
pub const RC_AUTH_MALFORMED: i32 = 5;

/// Command-area verdict of the connector: the initiator's proof verified.
pub const VERDICT_OK: u8 = 1;
/// Command-area verdict: the initiator's proof did not verify.
pub const VERDICT_BAD_PROOF: u8 = 2;

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX} {}", B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PublicKey {
    /// Parses `fts-ed25519 BASE64 [comment]`.
    pub fn parse_line(line: &str) -> Result<PublicKey, String> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some(PUBLIC_PREFIX) => {}
            Some(other) => {
                return Err(format!(
                    "starts with {other:?}, expected {PUBLIC_PREFIX:?} (a line of a .pub file from `fts keygen`)"
                ))
            }
            None => return Err("empty".into()),
        }
        let b64 = words
            .next()
            .ok_or_else(|| format!("no key after {PUBLIC_PREFIX:?}"))?;
        let bytes = B64
            .decode(b64)
            .map_err(|e| format!("the key is not base64: {e}"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("the key has {} bytes, expected 32", b.len()))?;
        VerifyingKey::from_bytes(&key).map_err(|_| "not a valid Ed25519 public key".to_string())?;
        Ok(PublicKey(key))
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

/// A host's secret Ed25519 key, loaded from a key file.
pub struct SecretKey {
    signing: SigningKey,
    path: PathBuf,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("path", &self.path)
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

fn key_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Key {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl SecretKey {
    /// Loads a key file written by [`keygen`]. Refused, as ssh refuses,
    /// when group or others may read or write it, or when it is not a
    /// regular file.
    pub fn load(path: &Path) -> Result<SecretKey, Error> {
        let meta = fs::metadata(path).map_err(|e| {
            key_err(
                path,
                format!("cannot read the key file: {e} (make one with `fts keygen FILE`)"),
            )
        })?;
        if !meta.is_file() {
            return Err(key_err(path, "is not a regular file"));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(
                path,
                format!(
                    "permissions {mode:04o} are too open: a key file must be readable by its owner only; run `chmod 600 {}`",
                    path.display()
                ),
            ));
        }
        let text = fs::read_to_string(path)
            .map_err(|e| key_err(path, format!("cannot read the key file: {e}")))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| key_err(path, "is empty: not an fts key file"))?;
        let mut words = line.split_whitespace();
        if words.next() != Some(SECRET_PREFIX) {
            return Err(key_err(
                path,
                format!(
                    "is not an fts secret key (it should start with {SECRET_PREFIX:?}; a .pub file holds only the public half)"
                ),
            ));
        }
        let seed = words
            .next()
            .and_then(|b| B64.decode(b).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| {
                key_err(
                    path,
                    "the secret key is damaged (expected 32 bytes of base64)",
                )
            })?;
        Ok(SecretKey {
            signing: SigningKey::from_bytes(&seed),
            path: path.to_path_buf(),
        })
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sign(&self, label: &[u8], transcript: &[u8]) -> [u8; 64] {
        let mut msg = Vec::with_capacity(label.len() + transcript.len());
        msg.extend_from_slice(label);
        msg.extend_from_slice(transcript);
        self.signing.sign(&msg).to_bytes()
    }
}

fn verify(key: &PublicKey, label: &[u8], transcript: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    let mut msg = Vec::with_capacity(label.len() + transcript.len());
    msg.extend_from_slice(label);
    msg.extend_from_slice(transcript);
    vk.verify_strict(&msg, &Signature::from_bytes(sig)).is_ok()
}

/// Writes a new key to `path` (mode 0600, never over an existing file
/// unless `force`) and its public half to `path.pub` (mode 0644).
pub fn keygen(path: &Path, comment: &str, force: bool) -> Result<PublicKey, Error> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public = PublicKey(key.verifying_key().to_bytes());
    let comment: String = comment
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let pub_path = pub_path(path);
    if !force {
        for p in [path, pub_path.as_path()] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(key_err(
                    p,
                    "exists; refusing to overwrite a key (pass --force to replace it)",
                ));
            }
        }
    }
    let secret_line = format!("{SECRET_PREFIX} {} {comment}\n", B64.encode(key.to_bytes()));
    write_file(path, secret_line.as_bytes(), 0o600, force)?;
    write_file(
        &pub_path,
        format!("{public} {comment}\n").as_bytes(),
        0o644,
        force,
    )?;
    Ok(public)
}

/// `FILE.pub` for a key file `FILE`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), Error> {
    if replace {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(key_err(path, format!("cannot replace: {e}"))),
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| key_err(path, format!("cannot create: {e}")))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| key_err(path, format!("cannot write: {e}")))
}

/// Reads a trust list: authorized keys (`fts-ed25519 BASE64 [comment]` per
/// line) when `named` is false, known servers (`NAME fts-ed25519 BASE64
/// [comment]`, NAME may be `*`) when true. `#` starts a comment line. A
/// malformed line is an error naming its number: a typo must not silently
/// lock someone out or let someone in.
fn read_list(path: &Path, named: bool) -> Result<Vec<(Option<String>, PublicKey)>, Error> {
    let text = fs::read_to_string(path)
        .map_err(|e| key_err(path, format!("cannot read the trust list: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = if named {
            match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (Some(name.to_string()), rest.trim_start()),
                None => {
                    return Err(key_err(
                        path,
                        format!("line {}: expected `SERVER-NAME fts-ed25519 BASE64`", n + 1),
                    ))
                }
            }
        } else {
            (None, line)
        };
        let key = PublicKey::parse_line(rest)
            .map_err(|e| key_err(path, format!("line {}: {e}", n + 1)))?;
        out.push((name, key));
    }
    Ok(out)
}

/// A client's credentials and policy.
#[derive(Debug)]
pub struct ClientAuth {
    /// This client's key.
    pub key: SecretKey,
    /// `NAME fts-ed25519 KEY` lines of trusted servers; `None`: trust a
    /// server that proves this client's own key.
    pub known_servers: Option<PathBuf>,
    /// Ask for sealed (encrypted) segments.
    pub encrypt: bool,
}

/// A server's credentials and policy.
#[derive(Debug)]
pub struct ServerAuth {
    /// The server's key.
    pub key: SecretKey,
    /// `fts-ed25519 KEY` lines of trusted clients, re-read for every
    /// connection (so removing a line revokes that client at once);
    /// `None`: trust clients that prove the server's own key.
    pub authorized_keys: Option<PathBuf>,
    /// Seal every connection, whether the client asks or not.
    pub require_encrypt: bool,
}

impl ServerAuth {
    /// Reads the authorized-keys list once (at start): a missing or
    /// malformed list is an error before any client comes.
    pub fn check_list(&self) -> Result<(), Error> {
        match &self.authorized_keys {
            Some(p) => read_list(p, false).map(|_| ()),
            None => Ok(()),
        }
    }

    fn trusts(&self, client: &PublicKey) -> Result<bool, Error> {
        match &self.authorized_keys {
            None => Ok(*client == self.key.public()),
            Some(p) => Ok(read_list(p, false)?.iter().any(|(_, k)| k == client)),
        }
    }

    fn list_name(&self) -> String {
        match &self.authorized_keys {
            Some(p) => format!("is not in the authorized keys ({})", p.display()),
            None => {
                "is not the server's own key, and the server has no --authorized-keys list".into()
            }
        }
    }
}

impl ClientAuth {
    fn trusts(&self, server: &str, key: &PublicKey) -> Result<bool, Error> {
        match &self.known_servers {
            None => Ok(*key == self.key.public()),
            Some(p) => Ok(read_list(p, true)?
                .iter()
                .any(|(n, k)| k == key && n.as_deref().is_some_and(|n| n == server || n == "*"))),
        }
    }

    fn list_name(&self, server: &str) -> String {
        match &self.known_servers {
            Some(p) => format!(
                "is not listed for {server:?} in the known servers ({})",
                p.display()
            ),
            None => format!(
                "is not this client's own key ({}), and there is no --known-servers list",
                self.key.path().display()
            ),
        }
    }
}

/// The two segment keys of one connection.
pub struct SessionKeys {
    /// Seals what the initiator writes.
    pub initiator_to_connector: [u8; 32],
    /// Seals what the connector writes.
    pub connector_to_initiator: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.initiator_to_connector.fill(0);
        self.connector_to_initiator.fill(0);
    }
}

impl SessionKeys {
    /// (send, receive) for `role`.
    pub fn for_role(&self, role: Role) -> ([u8; 32], [u8; 32]) {
        match role {
            Role::Initiator => (self.initiator_to_connector, self.connector_to_initiator),
            Role::Connector => (self.connector_to_initiator, self.initiator_to_connector),
        }
    }
}

/// The bytes both signatures cover: everything in the entry that the
/// handshake depends on, in a fixed order (docs/FORMAT.md).
pub fn transcript(layout: Uuid, e: &PidEntry) -> Vec<u8> {
    let mut t = Vec::with_capacity(400);
    t.extend_from_slice(layout.as_bytes());
    t.extend_from_slice(&e.pro_process_id.to_le_bytes());
    t.extend_from_slice(&e.pro_generation.to_le_bytes());
    for name in [&e.pro_requestor, &e.pro_requestee] {
        let mut field = [0u8; fts_layout::NAME_MAX];
        let b = name.as_bytes();
        let n = b.len().min(field.len());
        field[..n].copy_from_slice(&b[..n]);
        t.extend_from_slice(&field);
    }
    t.extend_from_slice(e.pro_requestor_host.as_bytes());
    t.extend_from_slice(&e.pro_auth_nonce);
    t.extend_from_slice(&e.pro_requestor_key);
    t.extend_from_slice(&e.pro_requestor_kx);
    t.extend_from_slice(&e.pro_requestee_nonce);
    t.extend_from_slice(&e.pro_requestee_key);
    t.extend_from_slice(&e.pro_requestee_kx);
    t.extend_from_slice(&e.pro_auth_flags.to_le_bytes());
    t
}

fn derive(shared: &[u8; 32], transcript: &[u8]) -> SessionKeys {
    let th = blake3::hash(transcript);
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(shared);
    ikm[32..].copy_from_slice(th.as_bytes());
    let keys = SessionKeys {
        initiator_to_connector: blake3::derive_key(KDF_I2C, &ikm),
        connector_to_initiator: blake3::derive_key(KDF_C2I, &ikm),
    };
    ikm.fill(0);
    keys
}

fn agree(secret: &StaticSecret, peer: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = secret.diffie_hellman(&KxPublic::from(*peer));
    // A low-order peer key makes the secret predictable: refuse it.
    shared.was_contributory().then(|| shared.to_bytes())
}

/// The initiator's half of the handshake, made before the claim.
pub struct Hello {
    nonce: [u8; 16],
    kx: StaticSecret,
    encrypt: bool,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

impl Hello {
    /// A fresh nonce and ephemeral X25519 key.
    pub fn new(auth: &ClientAuth) -> Hello {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        let mut kx = [0u8; 32];
        rand::fill(&mut kx);
        let hello = Hello {
            nonce,
            kx: StaticSecret::from(kx),
            encrypt: auth.encrypt,
        };
        kx.fill(0);
        hello
    }

    /// Writes the initiator's fields into the claim.
    pub fn fill(&self, auth: &ClientAuth, e: &mut PidEntry) {
        e.pro_auth_alg = AUTH_ED25519;
        e.pro_auth_nonce = self.nonce;
        e.pro_requestor_key = auth.key.public().0;
        e.pro_requestor_kx = KxPublic::from(&self.kx).to_bytes();
        e.pro_auth_flags = if self.encrypt {
            AUTH_FLAG_ENCRYPT_ASKED
        } else {
            0
        };
    }
}

/// What the initiator has once it verified the server.
#[derive(Debug)]
pub struct ClientProof {
    /// The initiator's signature, for its command area.
    pub proof: [u8; 64],
    /// The connection's segment keys.
    pub keys: SessionKeys,
    /// Whether the segments are sealed (the server's signed decision).
    pub sealed: bool,
}

/// The initiator checks the accepted entry: the server proved a trusted
/// key for `server` over this very claim (its nonce, its ephemeral key).
/// `Err` is [`Error::Auth`] with `side` "this client".
pub fn verify_server(
    auth: &ClientAuth,
    hello: &Hello,
    layout: Uuid,
    server: &str,
    e: &PidEntry,
) -> Result<ClientProof, Error> {
    let refuse = |reason: String| Error::Auth {
        server: server.to_string(),
        side: "this client",
        reason,
    };
    let server_key = PublicKey(e.pro_requestee_key);
    if e.pro_auth_alg != AUTH_ED25519 || server_key.is_zero() {
        return Err(refuse(
            "the server proved no key (it runs without --key-file, or it is not the server you expect); nothing was sent".into(),
        ));
    }
    // Our own fields must be what we wrote: a claim rewritten by someone
    // else is not our connection.
    if e.pro_auth_nonce != hello.nonce
        || e.pro_requestor_kx != KxPublic::from(&hello.kx).to_bytes()
        || e.pro_requestor_key != auth.key.public().0
    {
        return Err(refuse(
            "the entry no longer holds this client's handshake (rewritten by another host)".into(),
        ));
    }
    if !auth.trusts(server, &server_key)? {
        return Err(refuse(format!(
            "the server's key {server_key} {}; nothing was sent",
            auth.list_name(server)
        )));
    }
    let t = transcript(layout, e);
    if !verify(&server_key, LABEL_CONNECTOR, &t, &e.pro_requestee_sig) {
        return Err(refuse(
            "the server's signature does not verify (an impostor replaying another handshake, or a damaged entry); nothing was sent".into(),
        ));
    }
    let sealed = e.pro_auth_flags & AUTH_FLAG_SEALED != 0;
    if hello.encrypt && !sealed {
        return Err(refuse(
            "the server did not agree to seal the segments (--encrypt)".into(),
        ));
    }
    let shared = agree(&hello.kx, &e.pro_requestee_kx)
        .ok_or_else(|| refuse("the server's ephemeral key is degenerate".into()))?;
    Ok(ClientProof {
        proof: auth.key.sign(LABEL_INITIATOR, &t),
        keys: derive(&shared, &t),
        sealed,
    })
}

/// The connector's decision on a pending request.
#[derive(Debug)]
pub enum Decision {
    /// Accept; with authentication, the initiator's proof is still to be
    /// checked ([`PendingProof`]).
    Accept(Option<PendingProof>),
    /// Refuse with `pro_con_rc` = `rc`.
    Refuse {
        /// `pro_con_rc`.
        rc: i32,
        /// For the server's log.
        reason: String,
    },
}

/// What the connector needs to check the initiator's proof.
#[derive(Debug)]
pub struct PendingProof {
    client_key: PublicKey,
    transcript: Vec<u8>,
    /// The connection's segment keys.
    pub keys: SessionKeys,
    /// Whether the segments are sealed.
    pub sealed: bool,
}

impl PendingProof {
    /// Whether `proof` (the initiator's command area) is its signature
    /// over this handshake.
    pub fn verify(&self, proof: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(proof) else {
            return false;
        };
        verify(&self.client_key, LABEL_INITIATOR, &self.transcript, &sig)
    }

    /// The client's key, for the log.
    pub fn client_key(&self) -> PublicKey {
        self.client_key
    }
}

/// The connector's answer to the pending entry `e` (re-read under the
/// lock): fills in its own fields (nonce, ephemeral key, public key,
/// flags, signature) when it accepts. Without `auth` the server accepts
/// unauthenticated requests only... and any request: it cannot prove a
/// key, so an authenticating client refuses it on its side.
pub fn respond(
    auth: Option<&ServerAuth>,
    layout: Uuid,
    e: &mut PidEntry,
) -> Result<Decision, Error> {
    let Some(auth) = auth else {
        return Ok(Decision::Accept(None));
    };
    if e.pro_auth_alg != AUTH_ED25519 {
        return Ok(Decision::Refuse {
            rc: RC_AUTH_REQUIRED,
            reason: "it sent no key (this server requires one: --key-file)".into(),
        });
    }
    let client_key = PublicKey(e.pro_requestor_key);
    if VerifyingKey::from_bytes(&client_key.0).is_err() {
        return Ok(Decision::Refuse {
            rc: RC_AUTH_MALFORMED,
            reason: "its public key is not a valid Ed25519 key".into(),
        });
    }
    if !auth.trusts(&client_key)? {
        return Ok(Decision::Refuse {
            rc: RC_KEY_NOT_TRUSTED,
            reason: format!("its key {client_key} {}", auth.list_name()),
        });
    }
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let mut kx = [0u8; 32];
    rand::fill(&mut kx);
    let kx = StaticSecret::from(kx);
    let Some(shared) = agree(&kx, &e.pro_requestor_kx) else {
        return Ok(Decision::Refuse {
            rc: RC_AUTH_MALFORMED,
            reason: "its ephemeral key is degenerate".into(),
        });
    };
    e.pro_requestee_nonce = nonce;
    e.pro_requestee_key = auth.key.public().0;
    e.pro_requestee_kx = KxPublic::from(&kx).to_bytes();
    let asked = e.pro_auth_flags & AUTH_FLAG_ENCRYPT_ASKED != 0;
    let sealed = asked || auth.require_encrypt;
    e.pro_auth_flags =
        (e.pro_auth_flags & AUTH_FLAG_ENCRYPT_ASKED) | if sealed { AUTH_FLAG_SEALED } else { 0 };
    let t = transcript(layout, e);
    e.pro_requestee_sig = auth.key.sign(LABEL_CONNECTOR, &t);
    Ok(Decision::Accept(Some(PendingProof {
        client_key,
        keys: derive(&shared, &t),
        transcript: t,
        sealed,
    })))
}

/// A refusal's `pro_con_rc` as the client says it.
pub fn describe_refusal(rc: i32) -> Option<&'static str> {
    Some(match rc {
        RC_KEY_NOT_TRUSTED => "the server does not trust this client's key (ask its operator to add your .pub file to its --authorized-keys list)",
        RC_AUTH_REQUIRED => "the server requires authentication (pass --key-file)",
        RC_AUTH_MALFORMED => "the server found this client's handshake malformed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(dir: &Path, name: &str) -> SecretKey {
        let p = dir.join(name);
        keygen(&p, name, false).unwrap();
        SecretKey::load(&p).unwrap()
    }

    fn claimed(c: &ClientAuth, h: &Hello) -> PidEntry {
        let mut e = PidEntry {
            pro_process_id: 3,
            pro_flag_process: fts_layout::PRO_FLAG_ALLOCATED,
            pro_generation: 9,
            pro_requestor: "alice".into(),
            pro_requestee: "srv".into(),
            ..PidEntry::default()
        };
        h.fill(c, &mut e);
        e
    }

    #[test]
    fn the_transcript_is_272_bytes_as_format_md_says() {
        assert_eq!(transcript(Uuid::nil(), &PidEntry::default()).len(), 272);
    }

    #[test]
    fn both_sides_agree_on_keys_and_any_changed_field_breaks_the_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let shared_key = key(dir.path(), "k");
        let client = ClientAuth {
            key: SecretKey::load(&dir.path().join("k")).unwrap(),
            known_servers: None,
            encrypt: true,
        };
        let server = ServerAuth {
            key: shared_key,
            authorized_keys: None,
            require_encrypt: false,
        };
        let layout = Uuid::from_u128(0x1234);
        let hello = Hello::new(&client);
        let mut e = claimed(&client, &hello);
        let Decision::Accept(Some(pending)) = respond(Some(&server), layout, &mut e).unwrap()
        else {
            panic!("not accepted")
        };
        let proof = verify_server(&client, &hello, layout, "srv", &e).unwrap();
        assert!(proof.sealed && pending.sealed);
        assert!(pending.verify(&proof.proof));
        assert_eq!(
            proof.keys.initiator_to_connector,
            pending.keys.initiator_to_connector
        );
        assert_eq!(
            proof.keys.connector_to_initiator,
            pending.keys.connector_to_initiator
        );
        assert_ne!(
            proof.keys.initiator_to_connector,
            proof.keys.connector_to_initiator
        );
        // Another generation, slot, name or layout: the server's signature
        // no longer verifies.
        for change in [
            |e: &mut PidEntry| e.pro_generation += 1,
            |e: &mut PidEntry| e.pro_process_id += 1,
            |e: &mut PidEntry| e.pro_requestee = "srv2".into(),
            |e: &mut PidEntry| e.pro_requestee_nonce[0] ^= 1,
            |e: &mut PidEntry| e.pro_auth_flags &= !AUTH_FLAG_SEALED,
        ] {
            let mut f = e.clone();
            change(&mut f);
            let name = f.pro_requestee.clone();
            assert!(verify_server(&client, &hello, layout, &name, &f).is_err());
        }
        assert!(verify_server(&client, &hello, Uuid::from_u128(7), "srv", &e).is_err());
        // A proof made for another handshake does not verify here.
        let hello2 = Hello::new(&client);
        let mut e2 = claimed(&client, &hello2);
        let Decision::Accept(Some(_)) = respond(Some(&server), layout, &mut e2).unwrap() else {
            panic!("not accepted")
        };
        let proof2 = verify_server(&client, &hello2, layout, "srv", &e2).unwrap();
        assert!(!pending.verify(&proof2.proof));
    }

    #[test]
    fn untrusted_and_missing_keys_are_refused_with_their_codes() {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerAuth {
            key: key(dir.path(), "s"),
            authorized_keys: None,
            require_encrypt: false,
        };
        let other = ClientAuth {
            key: key(dir.path(), "o"),
            known_servers: None,
            encrypt: false,
        };
        let hello = Hello::new(&other);
        let mut e = claimed(&other, &hello);
        match respond(Some(&server), Uuid::nil(), &mut e).unwrap() {
            Decision::Refuse { rc, .. } => assert_eq!(rc, RC_KEY_NOT_TRUSTED),
            d => panic!("{d:?}"),
        }
        let mut plain = PidEntry::default();
        match respond(Some(&server), Uuid::nil(), &mut plain).unwrap() {
            Decision::Refuse { rc, .. } => assert_eq!(rc, RC_AUTH_REQUIRED),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn trust_lists_are_strict_about_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path(), "k");
        let list = dir.path().join("list");
        fs::write(&list, format!("# ok\n\n{} c\nbogus line\n", k.public())).unwrap();
        let err = read_list(&list, false).unwrap_err().to_string();
        assert!(err.contains("line 4"), "{err}");
        fs::write(&list, format!("srv {} c\n* {}\n", k.public(), k.public())).unwrap();
        let v = read_list(&list, true).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0.as_deref(), Some("srv"));
    }
}
