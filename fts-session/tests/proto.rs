//! Framing and text-mode tests for the control protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fts_session::{
    decode_request, decode_response, encode_request, encode_response, to_wire_text, DirEntry,
    EntryKind, ErrorCode, FromWireText, ProtoError, Request, Response, MAX_CONTROL_MESSAGE,
};
use proptest::prelude::*;

fn all_requests() -> Vec<Request> {
    vec![
        Request::Put {
            path: "a/b.txt".into(),
            size: 12,
            replace: true,
            text: false,
        },
        Request::Get {
            path: "x".into(),
            text: true,
        },
        Request::Dir { path: None },
        Request::Dir {
            path: Some("sub".into()),
        },
        Request::Cd { path: "..".into() },
        Request::Pwd,
        Request::Commit {
            blake3: *sample_digest(),
        },
        Request::Close,
    ]
}

fn sample_digest() -> &'static [u8; 32] {
    // A fixed, non-trivial digest pattern (the crate does not hash here).
    &[
        0x00, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50,
        0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b,
        0x5a, 0x69,
    ]
}

fn all_responses() -> Vec<Response> {
    vec![
        Response::Ok,
        Response::Ready {
            size: u64::MAX,
            mtime_ns: 1_700_000_000_000_000_000,
        },
        Response::Digest {
            blake3: *sample_digest(),
        },
        Response::Listing {
            entries: vec![
                DirEntry {
                    name: "f".into(),
                    size: 3,
                    kind: EntryKind::File,
                    mtime_ns: 1,
                },
                DirEntry {
                    name: "d".into(),
                    size: 0,
                    kind: EntryKind::Dir,
                    mtime_ns: 2,
                },
                DirEntry {
                    name: "l".into(),
                    size: 0,
                    kind: EntryKind::Symlink,
                    mtime_ns: 3,
                },
                DirEntry {
                    name: "p".into(),
                    size: 0,
                    kind: EntryKind::Other,
                    mtime_ns: 4,
                },
            ],
        },
        Response::Cwd { path: "/a".into() },
        Response::Error {
            code: ErrorCode::Integrity,
            message: "digest mismatch".into(),
        },
    ]
}

#[test]
fn requests_round_trip() {
    for req in all_requests() {
        let wire = encode_request(&req);
        assert_eq!(&wire[..4], b"FTS1");
        assert!(wire.len() < MAX_CONTROL_MESSAGE);
        assert_eq!(decode_request(&wire).unwrap(), req);
    }
}

#[test]
fn responses_round_trip() {
    for resp in all_responses() {
        let wire = encode_response(&resp);
        assert_eq!(&wire[..4], b"FTS1");
        assert_eq!(decode_response(&wire).unwrap(), resp);
    }
}

#[test]
fn error_codes_round_trip() {
    for code in [
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::Permission,
        ErrorCode::OutsideRoot,
        ErrorCode::NotADirectory,
        ErrorCode::IsADirectory,
        ErrorCode::BadRequest,
        ErrorCode::Integrity,
        ErrorCode::Io,
    ] {
        let resp = Response::Error {
            code,
            message: String::new(),
        };
        assert_eq!(decode_response(&encode_response(&resp)).unwrap(), resp);
    }
}

#[test]
fn digest_is_lowercase_hex_in_json() {
    let wire = encode_request(&Request::Commit {
        blake3: *sample_digest(),
    });
    let body = std::str::from_utf8(&wire[4..]).unwrap();
    assert!(
        body.contains("\"000123456789abcdefff102030405060708090a0b0c0d0e0f00f1e2d3c4b5a69\""),
        "{body}"
    );
    // Upper case is accepted on decode.
    let upper = body
        .to_uppercase()
        .replace("COMMIT", "Commit")
        .replace("BLAKE3", "blake3");
    let mut msg = b"FTS1".to_vec();
    msg.extend_from_slice(upper.as_bytes());
    assert_eq!(
        decode_request(&msg).unwrap(),
        Request::Commit {
            blake3: *sample_digest()
        }
    );
}

#[test]
fn bad_digests_are_rejected() {
    for body in [
        r#"{"Commit":{"blake3":"00"}}"#,
        r#"{"Commit":{"blake3":"zz0123456789abcdefff102030405060708090a0b0c0d0e0f00f1e2d3c4b5a69"}}"#,
        r#"{"Commit":{"blake3":7}}"#,
    ] {
        let mut msg = b"FTS1".to_vec();
        msg.extend_from_slice(body.as_bytes());
        assert!(
            matches!(decode_request(&msg), Err(ProtoError::Json(_))),
            "{body}"
        );
    }
}

#[test]
fn wrong_magic_is_rejected_clearly() {
    let mut wire = encode_request(&Request::Pwd);
    wire[3] = b'2';
    let err = decode_request(&wire).unwrap_err();
    assert!(matches!(err, ProtoError::BadMagic { .. }));
    assert!(err.to_string().contains("FTS1"), "{err}");
    assert!(matches!(
        decode_response(b"{\"Ok\"}"),
        Err(ProtoError::BadMagic { .. })
    ));
}

#[test]
fn short_messages_are_rejected() {
    for msg in [&b""[..], b"F", b"FTS"] {
        assert!(matches!(
            decode_request(msg),
            Err(ProtoError::Truncated { .. })
        ));
    }
    assert!(matches!(decode_request(b"FTS1"), Err(ProtoError::Json(_))));
}

#[test]
fn oversized_messages_are_rejected() {
    let mut msg = b"FTS1".to_vec();
    msg.resize(MAX_CONTROL_MESSAGE + 1, b' ');
    assert!(matches!(
        decode_request(&msg),
        Err(ProtoError::TooLarge { .. })
    ));
    // Exactly at the limit is still decoded (here: valid JSON padded with spaces).
    let mut msg = encode_request(&Request::Close);
    msg.resize(MAX_CONTROL_MESSAGE, b' ');
    assert_eq!(decode_request(&msg).unwrap(), Request::Close);
}

#[test]
fn unknown_commands_and_fields_are_rejected() {
    for body in [
        r#""Format""#,
        r#"{"Get":{"path":"x"}}"#,
        r#"{"Get":{"path":"x","text":false,"mode":1}}"#,
        r#"{"Dir":{"path":null},"Pwd":null}"#,
    ] {
        let mut msg = b"FTS1".to_vec();
        msg.extend_from_slice(body.as_bytes());
        assert!(decode_request(&msg).is_err(), "{body}");
    }
}

#[test]
fn a_response_is_not_a_request() {
    assert!(decode_request(&encode_response(&Response::Ok)).is_err());
    assert!(decode_response(&encode_request(&Request::Close)).is_err());
}

#[test]
fn to_wire_text_examples() {
    assert_eq!(to_wire_text(b""), b"");
    assert_eq!(to_wire_text(b"a\nb\n"), b"a\r\nb\r\n");
    assert_eq!(to_wire_text(b"a\r\nb\n"), b"a\r\nb\r\n");
    assert_eq!(to_wire_text(b"\n\n"), b"\r\n\r\n");
    assert_eq!(to_wire_text(b"lone\rcr"), b"lone\rcr");
}

#[test]
fn from_wire_text_holds_back_a_trailing_cr() {
    let mut conv = FromWireText::new();
    let mut out = Vec::new();
    conv.push(b"line\r", &mut out);
    assert_eq!(out, b"line");
    conv.push(b"\nnext\r", &mut out);
    assert_eq!(out, b"line\nnext");
    conv.push(b"x", &mut out);
    assert_eq!(out, b"line\nnext\rx");
    conv.push(b"\r", &mut out);
    conv.finish(&mut out);
    assert_eq!(out, b"line\nnext\rx\r");
    assert_eq!(FromWireText::convert_all(b"\r\r\n"), b"\r\n");
}

fn stream(data: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut conv = FromWireText::new();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        conv.push(&data[start..p], &mut out);
        start = p;
    }
    conv.push(&data[start..], &mut out);
    conv.finish(&mut out);
    out
}

fn crlf_heavy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()],
        0..200,
    )
}

proptest! {
    #[test]
    fn streaming_equals_one_shot(
        data in crlf_heavy(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        prop_assert_eq!(stream(&data, &cuts), FromWireText::convert_all(&data));
    }

    #[test]
    fn text_round_trips_without_cr(
        data in prop::collection::vec(
            prop_oneof![Just(b'\n'), any::<u8>()].prop_filter("no CR", |b| *b != b'\r'),
            0..200,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let wire = to_wire_text(&data);
        prop_assert_eq!(FromWireText::convert_all(&wire), data.clone());
        prop_assert_eq!(stream(&wire, &cuts), data);
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let mut prefixed = b"FTS1".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = decode_request(&prefixed);
        let _ = decode_response(&prefixed);
    }

    #[test]
    fn put_round_trips(path in ".*", size in any::<u64>(), replace in any::<bool>(), text in any::<bool>()) {
        let req = Request::Put { path, size, replace, text };
        prop_assert_eq!(decode_request(&encode_request(&req)).unwrap(), req);
    }
}
