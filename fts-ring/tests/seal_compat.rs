//! `fts_ring::seal` (on `ring`) seals exactly as RustCrypto's `aes-gcm`
//! 0.10, which fts used before, with the nonce and associated data of
//! FORMAT.md "Sealed segments": a segment sealed by either opens with the
//! other, over every length up to a few blocks past each of `ring`'s bulk
//! thresholds and at the segment sizes the layouts use.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use fts_layout::{Role, SEAL_TAG_SIZE};
use fts_ring::seal::{nonce, SealKeys, Sealer, SegmentContext};

fn ctx(len: usize, seq: u64) -> SegmentContext {
    SegmentContext {
        layout_id: 0x5eed_0000_0000_0001 ^ len as u64,
        slot: 2,
        generation: 77,
        writer: if len % 2 == 0 {
            Role::Initiator
        } else {
            Role::Connector
        },
        index: (len % 64) as u32,
        segment: 1000 + len as u32,
        seq,
        req_id: 3,
        flags: (len % 4) as u8,
        len: len as u32,
    }
}

fn lengths() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=1100).collect();
    for base in [4096usize, 16_384, 65_472, 65_536, 262_080, 1 << 20] {
        v.extend(base.saturating_sub(40)..base + 40);
    }
    v
}

#[test]
fn ring_and_rustcrypto_seal_and_open_each_other() {
    let send = [0x42; 32];
    let recv = [0x24; 32];
    let mut ours = Sealer::new(&SealKeys { send, recv }).unwrap();
    let peer = Sealer::new(&SealKeys {
        send: recv,
        recv: send,
    })
    .unwrap();
    let theirs = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&send));
    for (i, len) in lengths().into_iter().enumerate() {
        let seq = i as u64 + 1;
        let c = ctx(len, seq);
        let text: Vec<u8> = (0..len).map(|j| (j * 7 + len) as u8).collect();

        // Ours sealed, theirs opens: byte-identical ciphertext and tag.
        let mut a = text.clone();
        a.resize(len + SEAL_TAG_SIZE, 0);
        ours.seal(&c, &mut a).unwrap();
        let mut b = text.clone();
        let tag = theirs
            .encrypt_in_place_detached(Nonce::from_slice(&nonce(seq)), &c.aad(), &mut b)
            .unwrap();
        b.extend_from_slice(&tag);
        assert_eq!(a, b, "sealed {len} bytes");

        let (ct, t) = a.split_at_mut(len);
        theirs
            .decrypt_in_place_detached(
                Nonce::from_slice(&nonce(seq)),
                &c.aad(),
                ct,
                Tag::from_slice(t),
            )
            .unwrap();
        assert_eq!(ct, &text[..], "theirs opened ours, {len} bytes");

        // Theirs sealed, ours opens.
        peer.open(&c, &mut b).unwrap();
        assert_eq!(&b[..len], &text[..], "ours opened theirs, {len} bytes");
    }
}
