//! Sealed segments: AES-256-GCM over each data segment's payload
//! (FORMAT.md "Data segment", sealed segments).
//!
//! A sealed segment holds the 64-byte header (`seal` =
//! [`SEAL_AES256GCM`](fts_layout::SEAL_AES256GCM), `len` = payload bytes),
//! then `len` bytes of ciphertext, then the 16-byte GCM tag. Its payload
//! capacity is 16 bytes less than an unsealed segment's.
//!
//! - **Key**: each direction has its own 256-bit key ([`SealKeys`]), derived
//!   per connection by the session layer; the initiator's `send` key is the
//!   connector's `recv` key.
//! - **Nonce** (96 bits): the segment's sequence number (u64 LE) followed by
//!   four zero bytes ([`nonce`]). Sequence numbers start at 1 in every
//!   connection and are never used twice within it, not even by a
//!   retransmission, so a nonce never repeats under a key. The sealing side
//!   enforces this itself: it refuses to seal a sequence number that is not
//!   greater than the last one it sealed ([`Error::SealSequence`](crate::Error::SealSequence)).
//! - **Associated data**: [`SegmentContext::aad`], 56 bytes binding the
//!   ciphertext to its layout, slot, generation, writing side, ring index,
//!   global segment number, sequence number, request id, flags and length;
//!   a segment replayed from an earlier message or connection, moved to
//!   another ring entry, slot or device, or given another header does not
//!   open.
//!
//! This module is pure (no I/O); the driver seals into and opens in its
//! aligned I/O buffer, in place.
//!
//! Implementation: `ring`'s `AES_256_GCM` (BoringSSL's assembly: AES-NI
//! with carry-less multiplication, or VAES/VPCLMULQDQ where the CPU has
//! them, chosen at run time), about 10 GB/s on one core of the reference
//! machine against about 1.35 GB/s for RustCrypto's `aes-gcm` 0.10, which
//! fts used before (same algorithm, nonce and associated data, so the
//! format did not change; the golden vectors in the tests were sealed with
//! it). The keys in [`SealKeys`] are zeroed when dropped; the ciphers' key
//! schedules inside `ring` are not (`ring` does not zero them, and this
//! crate has no unsafe code to do it).

use std::fmt;

use fts_layout::{Role, SEAL_TAG_SIZE};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use zeroize::Zeroize;

/// The domain-separation prefix of the associated data (10 bytes).
pub const AAD_PREFIX: &[u8; 10] = b"fts-seg-v1";

/// Length of [`SegmentContext::aad`]: 10 + 8 + 4 + 8 + 4 + 4 + 4 + 8 + 1 + 1 + 4.
pub const AAD_LEN: usize = 56;

/// Length of a nonce.
pub const NONCE_LEN: usize = 12;

/// Per-connection keys for sealing segments (32-byte AES-256-GCM keys).
///
/// `send` seals what this side writes, `recv` opens what the peer writes:
/// the two sides of a connection hold mirrored keys (the initiator's `send`
/// is the connector's `recv`). Keys must be fresh for every connection
/// (generation): sequence numbers restart at 1 in each, so keys used twice
/// would repeat nonces. `Debug` does not print them; they are zeroed when
/// dropped.
pub struct SealKeys {
    /// Key for the segments this side writes.
    pub send: [u8; 32],
    /// Key for the segments the peer writes.
    pub recv: [u8; 32],
}

impl fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKeys { send: <redacted>, recv: <redacted> }")
    }
}

impl Drop for SealKeys {
    fn drop(&mut self) {
        self.send.zeroize();
        self.recv.zeroize();
    }
}

/// The nonce of the segment with sequence number `seq`: `seq` (u64 LE)
/// followed by four zero bytes.
pub fn nonce(seq: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&seq.to_le_bytes());
    n
}

/// Everything a sealed segment is bound to besides its key: the fields of
/// its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentContext {
    /// Layout id (`blk5_layout_id`).
    pub layout_id: u64,
    /// Connection slot (`pro_process_id`, = header `slot`).
    pub slot: u32,
    /// Connection generation (= header `generation`).
    pub generation: u64,
    /// The side that wrote the segment (owner of the ring).
    pub writer: Role,
    /// Ring index of the entry.
    pub index: u32,
    /// Global segment number `g` (= header stamp `index`).
    pub segment: u32,
    /// Sequence number (= header `seg_seq`).
    pub seq: u64,
    /// Request id (= header `req_id`).
    pub req_id: u8,
    /// Data flags (= header `flags`).
    pub flags: u8,
    /// Payload (plaintext = ciphertext) bytes (= header `len`).
    pub len: u32,
}

impl SegmentContext {
    /// The associated data, all integers little-endian:
    ///
    /// | off | size | field |
    /// |---:|---:|---|
    /// | 0 | 10 | `"fts-seg-v1"` |
    /// | 10 | 8 | layout id |
    /// | 18 | 4 | slot |
    /// | 22 | 8 | generation |
    /// | 30 | 4 | writer role code (1 initiator, 2 connector) |
    /// | 34 | 4 | ring index |
    /// | 38 | 4 | global segment number |
    /// | 42 | 8 | sequence number |
    /// | 50 | 1 | request id |
    /// | 51 | 1 | flags |
    /// | 52 | 4 | len |
    pub fn aad(&self) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            a[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(AAD_PREFIX);
        put(&self.layout_id.to_le_bytes());
        put(&self.slot.to_le_bytes());
        put(&self.generation.to_le_bytes());
        put(&self.writer.code().to_le_bytes());
        put(&self.index.to_le_bytes());
        put(&self.segment.to_le_bytes());
        put(&self.seq.to_le_bytes());
        put(&[self.req_id]);
        put(&[self.flags]);
        put(&self.len.to_le_bytes());
        a
    }
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sequence number is not greater than one already sealed: sealing
    /// it would reuse a nonce.
    #[error("sequence number {seq} is not above {last}, the last one sealed")]
    Sequence {
        /// The refused sequence number.
        seq: u64,
        /// The last sequence number sealed.
        last: u64,
    },
    /// The tag does not match: wrong key, or the ciphertext or anything in
    /// the associated data differs from what was sealed.
    #[error("authentication failed")]
    Open,
    /// The buffer is too short for the stated length plus the tag.
    #[error("buffer too short")]
    Short,
    /// The send and receive keys are equal: both sides' sequence numbers
    /// start at 1, so one key for both directions would repeat nonces.
    #[error("the send and receive keys are equal (nonces would repeat)")]
    EqualKeys,
    /// The cipher refused the key (not expected for a 32-byte key).
    #[error("the AES-256-GCM key could not be set up")]
    Key,
}

/// The AES-256-GCM cipher of one key.
fn cipher(key: &[u8; 32]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Key)
}

/// Checks the tag at `body[ctx.len..ctx.len + 16]` and, only if it
/// matches, leaves the plaintext in `body[..ctx.len]`.
fn open_with(key: &LessSafeKey, ctx: &SegmentContext, body: &mut [u8]) -> Result<(), SealError> {
    let len = ctx.len as usize;
    if body.len() < len + SEAL_TAG_SIZE {
        return Err(SealError::Short);
    }
    let (text, rest) = body.split_at_mut(len);
    let mut tag = [0u8; SEAL_TAG_SIZE];
    tag.copy_from_slice(&rest[..SEAL_TAG_SIZE]);
    key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce(ctx.seq)),
        Aad::from(ctx.aad()),
        Tag::from(tag),
        text,
        0..,
    )
    .map(|_| ())
    .map_err(|_| SealError::Open)
}

/// Both ciphers of one side of a connection, and the nonce guard.
pub struct Sealer {
    send: LessSafeKey,
    recv: LessSafeKey,
    last_sealed: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("alg", &"AES-256-GCM")
            .field("last_sealed", &self.last_sealed)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The ciphers for `keys`. Refuses equal send and receive keys: both
    /// sides' sequence numbers start at 1, so one key for both directions
    /// would repeat nonces.
    pub fn new(keys: &SealKeys) -> Result<Sealer, SealError> {
        if keys.send == keys.recv {
            return Err(SealError::EqualKeys);
        }
        // Borrowed, not copied: the only copies of the keys are `keys`
        // (zeroed on drop) and the ciphers' key schedules (not zeroed: see
        // the module docs).
        Ok(Sealer {
            send: cipher(&keys.send)?,
            recv: cipher(&keys.recv)?,
            last_sealed: 0,
        })
    }

    /// The last sequence number sealed (0: none yet).
    pub fn last_sealed(&self) -> u64 {
        self.last_sealed
    }

    /// Encrypts `body[..ctx.len]` in place and writes the tag into
    /// `body[ctx.len..ctx.len + 16]`. `ctx.seq` must be greater than every
    /// sequence number sealed before.
    pub fn seal(&mut self, ctx: &SegmentContext, body: &mut [u8]) -> Result<(), SealError> {
        if ctx.seq <= self.last_sealed {
            return Err(SealError::Sequence {
                seq: ctx.seq,
                last: self.last_sealed,
            });
        }
        let len = ctx.len as usize;
        if body.len() < len + SEAL_TAG_SIZE {
            return Err(SealError::Short);
        }
        let (text, rest) = body.split_at_mut(len);
        // Claimed before encrypting: even a failure never leaves a nonce
        // that could be used again.
        self.last_sealed = ctx.seq;
        let tag = self
            .send
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(ctx.seq)),
                Aad::from(ctx.aad()),
                text,
            )
            .map_err(|_| SealError::Short)?;
        rest[..SEAL_TAG_SIZE].copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Checks the tag at `body[ctx.len..ctx.len + 16]` and, only if it
    /// matches, leaves the plaintext in `body[..ctx.len]` (decrypted in
    /// place). On failure `body[..ctx.len]` is zeroed: neither the
    /// ciphertext nor unauthenticated plaintext is left (`ring` decrypts
    /// while it authenticates); the tag is left as it was.
    pub fn open(&self, ctx: &SegmentContext, body: &mut [u8]) -> Result<(), SealError> {
        open_with(&self.recv, ctx, body)
    }
}

/// The receiving cipher alone, to open segments on another thread
/// ([`Sealer::opener`]).
pub(crate) struct Opener {
    recv: LessSafeKey,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener").finish_non_exhaustive()
    }
}

impl Opener {
    /// As [`Sealer::open`].
    pub(crate) fn open(&self, ctx: &SegmentContext, body: &mut [u8]) -> Result<(), SealError> {
        open_with(&self.recv, ctx, body)
    }
}

impl Sealer {
    /// A copy of the receiving cipher.
    pub(crate) fn opener(&self) -> Opener {
        Opener {
            recv: self.recv.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SealKeys {
        SealKeys {
            send: [1; 32],
            recv: [2; 32],
        }
    }

    fn mirrored() -> SealKeys {
        SealKeys {
            send: [2; 32],
            recv: [1; 32],
        }
    }

    fn ctx(len: u32) -> SegmentContext {
        SegmentContext {
            layout_id: 0x1122_3344_5566_7788,
            slot: 3,
            generation: 9,
            writer: Role::Initiator,
            index: 2,
            segment: 40,
            seq: 7,
            req_id: 5,
            flags: 0x41,
            len,
        }
    }

    #[test]
    fn aad_layout_is_as_documented() {
        let a = ctx(0x0102_0304).aad();
        assert_eq!(&a[..10], b"fts-seg-v1");
        assert_eq!(&a[10..18], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&a[18..22], &3u32.to_le_bytes());
        assert_eq!(&a[22..30], &9u64.to_le_bytes());
        assert_eq!(&a[30..34], &1u32.to_le_bytes());
        assert_eq!(&a[34..38], &2u32.to_le_bytes());
        assert_eq!(&a[38..42], &40u32.to_le_bytes());
        assert_eq!(&a[42..50], &7u64.to_le_bytes());
        assert_eq!(a[50], 5);
        assert_eq!(a[51], 0x41);
        assert_eq!(&a[52..56], &0x0102_0304u32.to_le_bytes());
        assert_eq!(
            nonce(0x0807_0605_0403_0201),
            [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]
        );
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_text() {
        let mut tx = Sealer::new(&keys()).unwrap();
        let rx = Sealer::new(&mirrored()).unwrap();
        let text = b"attack at dawn, attack at dawn!".to_vec();
        let c = ctx(text.len() as u32);
        let mut body = text.clone();
        body.resize(text.len() + SEAL_TAG_SIZE, 0);
        tx.seal(&c, &mut body).unwrap();
        assert_ne!(&body[..text.len()], &text[..]);
        rx.open(&c, &mut body).unwrap();
        assert_eq!(&body[..text.len()], &text[..]);
    }

    #[test]
    fn any_change_of_context_body_tag_or_key_fails_to_open() {
        let mut tx = Sealer::new(&keys()).unwrap();
        let rx = Sealer::new(&mirrored()).unwrap();
        let c = ctx(100);
        let mut sealed = vec![0xAB; 100 + SEAL_TAG_SIZE];
        tx.seal(&c, &mut sealed).unwrap();
        let variants: Vec<SegmentContext> = vec![
            SegmentContext {
                layout_id: c.layout_id + 1,
                ..c
            },
            SegmentContext { slot: 4, ..c },
            SegmentContext {
                generation: 10,
                ..c
            },
            SegmentContext {
                writer: Role::Connector,
                ..c
            },
            SegmentContext { index: 3, ..c },
            SegmentContext { segment: 41, ..c },
            SegmentContext { seq: 8, ..c },
            SegmentContext { req_id: 6, ..c },
            SegmentContext { flags: 0x01, ..c },
        ];
        for v in &variants {
            let mut b = sealed.clone();
            assert_eq!(rx.open(v, &mut b), Err(SealError::Open), "{v:?}");
            assert_eq!(&b[..100], &[0; 100][..], "a failed open zeroes the text");
            assert_eq!(&b[100..], &sealed[100..], "and leaves the tag");
        }
        // A shorter length moves the tag: fails too.
        let mut b = sealed.clone();
        assert_eq!(
            rx.open(&SegmentContext { len: 99, ..c }, &mut b),
            Err(SealError::Open)
        );
        for bit in [0, 7 * 8 + 3, 100 * 8, (100 + 15) * 8 + 7] {
            let mut b = sealed.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(rx.open(&c, &mut b), Err(SealError::Open), "bit {bit}");
        }
        // The sender's own receive key is not the peer's send key.
        let mut b = sealed.clone();
        assert_eq!(tx.open(&c, &mut b), Err(SealError::Open));
        let mut b = sealed.clone();
        rx.open(&c, &mut b).unwrap();
        assert_eq!(&b[..100], &[0xAB; 100][..]);
    }

    #[test]
    fn a_sequence_number_is_never_sealed_twice() {
        let mut tx = Sealer::new(&keys()).unwrap();
        let mut body = vec![0; 10 + SEAL_TAG_SIZE];
        tx.seal(&ctx(10), &mut body).unwrap();
        for seq in [7, 6, 0] {
            assert_eq!(
                tx.seal(&SegmentContext { seq, ..ctx(10) }, &mut body),
                Err(SealError::Sequence { seq, last: 7 })
            );
        }
        tx.seal(&SegmentContext { seq: 8, ..ctx(10) }, &mut body)
            .unwrap();
        assert_eq!(tx.last_sealed(), 8);
    }

    #[test]
    fn equal_keys_are_refused_and_debug_hides_keys() {
        let k = SealKeys {
            send: [0x5a; 32],
            recv: [0x5a; 32],
        };
        assert_eq!(Sealer::new(&k).err(), Some(SealError::EqualKeys));
        let shown = format!("{:?}", keys());
        assert!(!shown.contains('1'), "{shown}");
        assert!(shown.contains("redacted"));
    }
    /// Keys, context and payloads of the golden vectors: fixed, so that
    /// the ciphertexts below pin the wire format (FORMAT.md "Sealed
    /// segments") whatever AES-GCM implementation seals and opens.
    fn golden_keys() -> SealKeys {
        let mut send = [0u8; 32];
        for (i, b) in send.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        SealKeys {
            send,
            recv: [0xee; 32],
        }
    }

    fn golden_ctx(len: usize) -> SegmentContext {
        SegmentContext {
            layout_id: 0x0123_4567_89ab_cdef,
            slot: 17,
            generation: 0x0102_0304_0506,
            writer: Role::Connector,
            index: 5,
            segment: 1234,
            seq: 0x00de_adbe_ef01,
            req_id: 9,
            flags: 0x03,
            len: len as u32,
        }
    }

    fn golden_payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + (i >> 8)) as u8).collect()
    }

    /// Sealed with the RustCrypto `aes-gcm` 0.10 implementation (fts
    /// before it moved to `ring`): (payload length, ciphertext ‖ tag) for
    /// short payloads, (payload length, CRC32C of the ciphertext, tag)
    /// for long ones.
    const GOLDEN_SHORT: &[(usize, &str)] = &[
        (0, "3a19d9180be08704374d7b5a54add0ba"),
        (1, "daf1fe1839d461ae58083d5cd27367b7e2"),
        (15, "da84e0bbd4d36c07520aa21eaadeab793cc13970eb15dd59d4484b9fc8c6cf"),
        (16, "da84e0bbd4d36c07520aa21eaadeab01139455724b0ffc138f574e6dbedf196d"),
        (17, "da84e0bbd4d36c07520aa21eaadeab0142f781032f3c0c6470e20c43859f82bf19"),
        (45, "da84e0bbd4d36c07520aa21eaadeab014219c77b412a2fd724f5937d82f8ec6d0334af4bc0852cd213eda9bb89779428b722ebddb191308c5356ae123d"),
        (100, "da84e0bbd4d36c07520aa21eaadeab014219c77b412a2fd724f5937d82f8ec6d0334af4bc0852cd213eda9bb89630c5009ba1cfd3e47c222d5669a209484821e6718de9f02fdee092c73c97ae15ff61aea2fb5f428de3c9d19707ee6648beb2e4f34aeec6b9870b70c1b450fed6f95f71bbc4f51"),
        (255, "da84e0bbd4d36c07520aa21eaadeab014219c77b412a2fd724f5937d82f8ec6d0334af4bc0852cd213eda9bb89630c5009ba1cfd3e47c222d5669a209484821e6718de9f02fdee092c73c97ae15ff61aea2fb5f428de3c9d19707ee6648beb2e4f34aeecdaae8aa0afa12069033c6cc1fd2fcac492fdc50de684dac2679c012853c54cca5cb9336d897e90764cd27b17100c5af9c05898843cf30446f82770b4d9b413229adeb29e5c55b3fec2fd77fdb524aceb1df4d8f3225551c4533cd8dc809a5026cea4538635eead526ae14b293231f0fbe8f4e3ea12e5a0019bb2b7b481e44b8a5135a44f96e3030948e9cd29419d191cb47d1a27cf3bd36d26d1b50089718898d6e6bad61956b5ec6bd55f"),
    ];
    const GOLDEN_LONG: &[(usize, u32, &str)] = &[
        (256, 0xb6ff64ea, "f002c75d3ab1e30561f0518d1d186456"),
        (1000, 0x3ecbac15, "2582eee58bce2df5a0475b9643012402"),
        (4096, 0xc3d4e6e2, "4d930c360e2df33e1a6f986cbde02c5d"),
        (65472, 0x84f64f43, "286988559a2508dbd41e41ef5e0461fc"),
        (65549, 0x5d12547b, "a1b773f37964821018c43a271d2a317c"),
        (1048576, 0x16024576, "5f03ae777e2d28dc802b0eaa8993cfcc"),
    ];

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn golden_segments_seal_and_open_byte_identical() {
        let keys = golden_keys();
        let peer = SealKeys {
            send: keys.recv,
            recv: keys.send,
        };
        for (len, want) in GOLDEN_SHORT {
            let mut tx = Sealer::new(&keys).unwrap();
            let mut body = golden_payload(*len);
            body.resize(len + SEAL_TAG_SIZE, 0);
            tx.seal(&golden_ctx(*len), &mut body).unwrap();
            assert_eq!(&hex(&body), want, "seal of {len} bytes");
            let rx = Sealer::new(&peer).unwrap();
            rx.open(&golden_ctx(*len), &mut body).unwrap();
            assert_eq!(
                body[..*len],
                golden_payload(*len)[..],
                "open of {len} bytes"
            );
        }
        for (len, crc, tag) in GOLDEN_LONG {
            let mut tx = Sealer::new(&keys).unwrap();
            let mut body = golden_payload(*len);
            body.resize(len + SEAL_TAG_SIZE, 0);
            tx.seal(&golden_ctx(*len), &mut body).unwrap();
            assert_eq!(
                crc32c::crc32c(&body[..*len]),
                *crc,
                "ciphertext of {len} bytes"
            );
            assert_eq!(&hex(&body[*len..]), tag, "tag of {len} bytes");
            let rx = Sealer::new(&peer).unwrap();
            rx.open(&golden_ctx(*len), &mut body).unwrap();
            assert_eq!(
                body[..*len],
                golden_payload(*len)[..],
                "open of {len} bytes"
            );
        }
    }
}
