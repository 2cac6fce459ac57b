//! Who an fts host is on the SAN, and where its iSCSI LUN is.
//!
//! Reservations belong to an I_T nexus: the initiator name (an IQN) plus, for
//! iSCSI, the session's ISID. fts therefore derives all three identities
//! from stable inputs, so that a host that reconnects (or restarts) comes back
//! as the *same* initiator port, to which SPC ties its persistent-reservation
//! registration (tgt 1.0.85 ties it to the session instead; see the `iscsi`
//! module):
//!
//! - [`default_iqn`]: the IQN of an fts process, from the host name and the
//!   process's `--name` (two processes with different names are two
//!   initiators; one name always maps to the same IQN);
//! - [`validate_iqn`]: checks an IQN the user gave with `--initiator`;
//! - [`isid_for`]: the ISID used with an IQN (RFC 7143 "random" format,
//!   but derived from the IQN, not random);
//! - [`pr_key_for`]: the persistent-reservation key registered by an IQN.
//!
//! [`IscsiUrl`] parses the `iscsi://host[:port]/target-iqn/lun` locations the
//! iSCSI transport accepts; it is here, not in the (feature-gated) transport,
//! so that URLs can be checked in every build.
//!
//! Everything here is pure. The hashes are a fixed, documented algorithm
//! (FNV-1a 64 with a per-use domain string, then the SplitMix64 finaliser)
//! whose outputs are pinned by tests: changing them would change every
//! host's ISID and reservation key, so they must not change.
//!
//! iSCSI names are case-insensitive (RFC 3722 folds them to lower case), so
//! the ISID and key of an IQN do not depend on its case.

use std::fmt;

use crate::error::{Error, Result};

/// The fixed part of the IQNs made by [`default_iqn`]: naming authority
/// `fts.invalid` (a reserved, never-registered domain, so the names cannot
/// clash with a real organisation's).
pub const IQN_PREFIX: &str = "iqn.2026-11.invalid.fts";

/// The longest iSCSI name allowed (RFC 7143 §6.1), in bytes.
pub const MAX_ISCSI_NAME_LEN: usize = 223;

/// The TCP port of an iSCSI portal when the URL gives none.
pub const DEFAULT_ISCSI_PORT: u16 = 3260;

/// The highest LUN [`IscsiUrl`] accepts. libiscsi puts the LUN number as is
/// into the first two bytes of the LUN field (peripheral device addressing,
/// bus 0), which addresses LUNs 0 to 255 only.
pub const MAX_LUN: u16 = 255;

/// What [`validate_iqn`] accepts, for error messages.
const NAME_FORMATS: &str = "expected iqn.YYYY-MM.reversed.domain[:identifier], \
                            eui.<16 hex digits> or naa.<16 or 32 hex digits>";

/// FNV-1a 64 over `domain`, a NUL and `data`, then the SplitMix64 finaliser
/// (FNV alone mixes the last bytes poorly into the high bits).
fn hash64(domain: &str, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in domain.as_bytes().iter().chain(&[0u8]).chain(data) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The hash of an iSCSI name, case-folded.
fn name_hash(domain: &str, iqn: &str) -> u64 {
    hash64(domain, iqn.to_ascii_lowercase().as_bytes())
}

/// Eight hex digits of a hash, for suffixes.
fn short_hash(domain: &str, data: &str) -> String {
    format!("{:08x}", hash64(domain, data.as_bytes()) >> 32)
}

/// One component (host or name) of a [`default_iqn`]: ASCII letters are
/// lower-cased, digits, `.` and `-` kept, anything else becomes `-`. When
/// that loses information (some character was replaced, or the component is
/// empty), a short hash of the case-folded original is appended so that,
/// say, `a_b` and `a-b` stay distinct.
fn iqn_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 9);
    let mut lossy = s.is_empty();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('-');
            lossy = true;
        }
    }
    if lossy {
        let h = short_hash("fts-iqn-component", &s.to_ascii_lowercase());
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&h);
    }
    out
}

/// The IQN of the fts process called `name` on host `host`:
/// `iqn.2026-11.invalid.fts:<host>:<name>`.
///
/// Both parts are lower-cased (IQNs are case-insensitive, so `Alpha` and
/// `alpha` are the same initiator) and characters other than ASCII letters,
/// digits, `.` and `-` are replaced by `-`, with a short hash of the
/// original appended whenever a character had to be replaced (or a part is
/// empty), so different names still give different IQNs. A result longer
/// than [`MAX_ISCSI_NAME_LEN`] is truncated and ends with a hash of the whole
/// untruncated name. The result always passes [`validate_iqn`].
pub fn default_iqn(host: &str, name: &str) -> String {
    let iqn = format!(
        "{IQN_PREFIX}:{}:{}",
        iqn_component(host),
        iqn_component(name)
    );
    if iqn.len() <= MAX_ISCSI_NAME_LEN {
        return iqn;
    }
    let suffix = short_hash("fts-iqn-truncated", &iqn);
    // Everything in `iqn` is ASCII, so any byte index is a char boundary.
    let keep = MAX_ISCSI_NAME_LEN - suffix.len() - 1;
    format!("{}-{suffix}", &iqn[..keep])
}

/// Checks that `name` is a well-formed iSCSI name (RFC 7143 §4.2.7.1, RFC
/// 3720 §3.2.6.3): `iqn.YYYY-MM.reversed.domain[:identifier]`,
/// `eui.` + 16 hex digits, or `naa.` + 16 or 32 hex digits; at most
/// [`MAX_ISCSI_NAME_LEN`] bytes of ASCII letters, digits, `.`, `-` and `:`.
///
/// Letters may be upper case (iSCSI names are case-insensitive). Fails with
/// [`Error::InvalidRequest`] saying what is wrong and what is expected.
pub fn validate_iqn(name: &str) -> Result<()> {
    iqn_problem(name).map_or(Ok(()), |why| {
        Err(Error::InvalidRequest {
            target: format!("initiator name {name:?}"),
            detail: format!("not a valid iSCSI name: {why}; {NAME_FORMATS}"),
        })
    })
}

/// What is wrong with `name` as an iSCSI name, if anything.
fn iqn_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_ISCSI_NAME_LEN {
        return Some(format!(
            "it is {} bytes long, the limit is {MAX_ISCSI_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')))
    {
        return Some(format!(
            "character {c:?} is not allowed (only letters, digits, '.', '-' and ':')"
        ));
    }
    let lower = name.to_ascii_lowercase();
    let hex_problem = |digits: &str, kind: &str, lens: &[usize]| {
        let ok_len = lens.contains(&digits.len());
        let ok_hex = digits.bytes().all(|b| b.is_ascii_hexdigit());
        (!ok_len || !ok_hex).then(|| {
            let want = lens
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            format!("{kind} names are {kind}. followed by {want} hex digits")
        })
    };
    if let Some(digits) = lower.strip_prefix("eui.") {
        return hex_problem(digits, "eui", &[16]);
    }
    if let Some(digits) = lower.strip_prefix("naa.") {
        return hex_problem(digits, "naa", &[16, 32]);
    }
    let Some(rest) = lower.strip_prefix("iqn.") else {
        return Some("it must start with iqn., eui. or naa.".into());
    };
    let date_ok = rest.len() >= 8
        && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[4] == b'-'
        && matches!(
            &rest[5..7],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
        && rest.as_bytes()[7] == b'.';
    if !date_ok {
        return Some(
            "iqn. must be followed by the year and month the naming authority \
             owned its domain (YYYY-MM) and a '.'"
                .into(),
        );
    }
    let after_date = &rest[8..];
    let (authority, identifier) = match after_date.split_once(':') {
        Some((a, i)) => (a, Some(i)),
        None => (after_date, None),
    };
    if authority.is_empty() || authority.split('.').any(str::is_empty) {
        return Some(
            "the naming authority after the date must be a reversed domain name \
             (e.g. com.example), without empty labels"
                .into(),
        );
    }
    if identifier == Some("") {
        return Some("nothing follows the ':'".into());
    }
    None
}

/// The ISID fts uses with initiator `iqn`: 6 bytes in the RFC 7143 "random"
/// format (type bits `10`, the 6-bit A field zero) whose 40 remaining bits
/// are a hash of the case-folded IQN instead of random.
///
/// A stable ISID makes a reconnect (or a restart) log in as the *same*
/// initiator port (IQN + ISID), to which SPC ties persistent-reservation
/// registrations, and lets a conforming target reinstate the old session
/// instead of keeping a second one. (tgt 1.0.85 falls short on both counts;
/// see the `iscsi` module.) Bytes 1–3 are the B and C fields (libiscsi's
/// `rnd`), bytes 4–5 the D field (its `qualifier`).
pub fn isid_for(iqn: &str) -> [u8; 6] {
    let h = name_hash("fts-isid", iqn).to_be_bytes();
    [0x80, h[0], h[1], h[2], h[3], h[4]]
}

/// The persistent-reservation key fts registers for initiator `iqn`: a hash
/// of the case-folded IQN, never 0 (0 means "no key" in PR OUT).
pub fn pr_key_for(iqn: &str) -> u64 {
    name_hash("fts-pr-key", iqn).max(1)
}

/// Formats an ISID as 12 hex digits, as targets show it.
pub fn isid_hex(isid: &[u8; 6]) -> String {
    isid.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed `iscsi://host[:port]/target-iqn/lun` location.
///
/// `host` is a DNS name, an IPv4 address or a bracketed IPv6 address
/// (`[::1]`); the port defaults to [`DEFAULT_ISCSI_PORT`]; `lun` is a decimal
/// number up to [`MAX_LUN`]. Credentials (`user%password@host`) are refused:
/// a URL is echoed in messages and logs, so it must not carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IscsiUrl {
    /// The portal's host, without brackets for IPv6.
    pub host: String,
    /// The portal's TCP port.
    pub port: u16,
    /// The target's iSCSI name.
    pub target: String,
    /// The logical unit number.
    pub lun: u16,
}

impl IscsiUrl {
    /// The expected form, for error messages.
    pub const FORM: &'static str = "iscsi://host[:port]/target-iqn/lun";

    /// Parses `url`. Fails with [`Error::InvalidRequest`] (target = the URL)
    /// naming the part that is wrong.
    pub fn parse(url: &str) -> Result<Self> {
        parse_url(url).map_err(|why| Error::InvalidRequest {
            target: url.to_owned(),
            detail: format!("malformed iSCSI URL: {why} (expected {})", Self::FORM),
        })
    }

    /// The portal as libiscsi wants it: `host:port`, or `[v6addr]:port`.
    pub fn portal(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscsi://{}/{}/{}", self.portal(), self.target, self.lun)
    }
}

fn parse_url(url: &str) -> std::result::Result<IscsiUrl, String> {
    let Some(rest) = url.strip_prefix("iscsi://") else {
        return Err("it must start with iscsi://".into());
    };
    if let Some(c) = rest
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#'))
    {
        return Err(format!("character {c:?} is not allowed"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let (host, port) = split_host_port(authority)?;
    let mut parts = path.split('/');
    let target = parts.next().unwrap_or("");
    if target.is_empty() {
        return Err("missing target name after the portal".into());
    }
    let lun = match parts.next() {
        None | Some("") => return Err(format!("missing LUN after the target name {target:?}")),
        Some(l) => parse_lun(l)?,
    };
    if parts.next().is_some() {
        return Err("unexpected path after the LUN".into());
    }
    Ok(IscsiUrl {
        host,
        port,
        target: target.to_owned(),
        lun,
    })
}

fn split_host_port(authority: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("unterminated '[' in the portal".into());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address {addr:?}"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("bad host name {host:?}"));
    }
    let port = match port {
        None => DEFAULT_ISCSI_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad port {p:?} (expected 1 to 65535)")),
        },
    };
    Ok((host.to_owned(), port))
}

fn parse_lun(l: &str) -> std::result::Result<u16, String> {
    match l.parse::<u16>() {
        Ok(n) if n <= MAX_LUN && l.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "bad LUN {l:?} (expected a decimal number from 0 to {MAX_LUN})"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;

    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("node1", "alpha", "iqn.2026-11.invalid.fts:node1:alpha")]
    #[case(
        "Node1.Example.COM",
        "Alpha",
        "iqn.2026-11.invalid.fts:node1.example.com:alpha"
    )]
    #[case("h", "a-b.c", "iqn.2026-11.invalid.fts:h:a-b.c")]
    fn readable_iqns(#[case] host: &str, #[case] name: &str, #[case] want: &str) {
        assert_eq!(default_iqn(host, name), want);
    }

    #[rstest]
    #[case("node1", "a_b")]
    #[case("node1", "a b")]
    #[case("node1", "a:b")]
    #[case("node1", "ünïcode")]
    #[case("node1", "")]
    #[case("", "alpha")]
    #[case("host/with/slash", "x")]
    #[case(&"h".repeat(300), "x")]
    #[case("h", &"n".repeat(300))]
    #[case(&"é".repeat(200), &"ß".repeat(200))]
    fn derived_iqns_are_valid_and_stable(#[case] host: &str, #[case] name: &str) {
        let iqn = default_iqn(host, name);
        assert!(iqn.len() <= MAX_ISCSI_NAME_LEN, "{} bytes", iqn.len());
        validate_iqn(&iqn).unwrap();
        assert!(iqn.starts_with("iqn.2026-11.invalid.fts:"));
        assert_eq!(iqn, default_iqn(host, name));
        assert_eq!(iqn, iqn.to_ascii_lowercase());
    }

    #[rstest]
    #[case(("node1", "alpha"), ("node1", "beta"))]
    #[case(("node1", "alpha"), ("node2", "alpha"))]
    #[case(("node1", "a_b"), ("node1", "a-b"))]
    #[case(("node1", "a_b"), ("node1", "a b"))]
    #[case(("a.b", "c"), ("a", "b.c"))]
    #[case(("node1", ""), ("node1", "-"))]
    fn different_names_give_different_identities(#[case] a: (&str, &str), #[case] b: (&str, &str)) {
        let (ia, ib) = (default_iqn(a.0, a.1), default_iqn(b.0, b.1));
        assert_ne!(ia, ib);
        assert_ne!(isid_for(&ia), isid_for(&ib));
        assert_ne!(pr_key_for(&ia), pr_key_for(&ib));
    }

    #[test]
    fn names_differing_only_in_case_are_one_initiator() {
        assert_eq!(default_iqn("NODE", "Alpha"), default_iqn("node", "alpha"));
        let iqn = "iqn.2026-11.invalid.fts:node1:alpha";
        let upper = iqn.to_ascii_uppercase();
        assert_eq!(isid_for(iqn), isid_for(&upper));
        assert_eq!(pr_key_for(iqn), pr_key_for(&upper));
    }

    #[test]
    fn long_names_that_differ_only_past_the_limit_stay_distinct() {
        let a = default_iqn("h", &"n".repeat(300));
        let b = default_iqn("h", &format!("{}x", "n".repeat(299)));
        assert_ne!(a, b);
        assert_ne!(isid_for(&a), isid_for(&b));
        assert_ne!(pr_key_for(&a), pr_key_for(&b));
    }

    #[test]
    fn long_names_are_truncated_with_a_hash() {
        let iqn = default_iqn("h", &"n".repeat(300));
        assert_eq!(iqn.len(), MAX_ISCSI_NAME_LEN);
        let (_, suffix) = iqn.rsplit_once('-').unwrap();
        assert_eq!(suffix.len(), 8);
        assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    /// The hashes are part of the on-SAN identity of every host: these values
    /// must never change.
    #[rstest]
    #[case(
        "iqn.2026-11.invalid.fts:node1:alpha",
        "8094719f8fbb",
        0x7a70_4000_382c_ca96
    )]
    #[case(
        "iqn.1993-08.org.debian:01:abcdef",
        "804bdf742a5d",
        0x4bba_c253_8d18_3d70
    )]
    #[case(
        "IQN.2026-11.INVALID.FTS:NODE1:ALPHA",
        "8094719f8fbb",
        0x7a70_4000_382c_ca96
    )]
    fn pinned_hash_values(#[case] iqn: &str, #[case] isid: &str, #[case] key: u64) {
        assert_eq!(isid_hex(&isid_for(iqn)), isid);
        assert_eq!(pr_key_for(iqn), key, "{:#018x}", pr_key_for(iqn));
    }

    #[test]
    fn pinned_component_hash() {
        assert_eq!(
            default_iqn("h", "a_b"),
            "iqn.2026-11.invalid.fts:h:a-b-f34c1e81"
        );
    }

    #[test]
    fn isid_has_the_random_format_and_keys_are_nonzero() {
        let mut isids = HashSet::new();
        let mut keys = HashSet::new();
        for i in 0..2000 {
            let iqn = default_iqn("host", &format!("name{i}"));
            let isid = isid_for(&iqn);
            assert_eq!(isid[0], 0x80, "type 10b, A field 0");
            assert!(isids.insert(isid));
            let key = pr_key_for(&iqn);
            assert_ne!(key, 0);
            assert!(keys.insert(key));
        }
        assert_eq!(isid_hex(&[0x80, 1, 0x23, 0x45, 0x67, 0x89]), "800123456789");
    }

    #[rstest]
    #[case("iqn.2026-11.invalid.fts:node1:alpha")]
    #[case("iqn.1993-08.org.debian:01:abcdef")]
    #[case("IQN.2001-04.COM.EXAMPLE:Storage.Disk2.sys1.xyz")]
    #[case("iqn.2001-04.com.example")]
    #[case("eui.02004567A425678D")]
    #[case("naa.52004567BA64678D")]
    #[case("naa.62004567BA64678D0123456789ABCDEF")]
    fn valid_names(#[case] name: &str) {
        validate_iqn(name).unwrap();
    }

    #[rstest]
    #[case("", "empty")]
    #[case("node1", "must start with iqn., eui. or naa.")]
    #[case("iqn.2026-13.invalid.fts:x", "YYYY-MM")]
    #[case("iqn.26-11.invalid.fts:x", "YYYY-MM")]
    #[case("iqn.2026-11", "YYYY-MM")]
    #[case("iqn.2026-11.:x", "reversed domain")]
    #[case("iqn.2026-11.com..example", "empty labels")]
    #[case("iqn.2026-11.com.example:", "nothing follows")]
    #[case("iqn.2026-11.com.example:a b", "character ' '")]
    #[case("iqn.2026-11.com.example:a_b", "character '_'")]
    #[case("eui.02004567A425678", "16 hex digits")]
    #[case("eui.02004567A425678G", "16 hex digits")]
    #[case("naa.52004567BA64678D01", "16 or 32 hex digits")]
    fn invalid_names(#[case] name: &str, #[case] why: &str) {
        let err = validate_iqn(name).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        assert!(msg.contains(why), "{msg}");
        assert!(msg.contains("iqn.YYYY-MM.reversed.domain"), "{msg}");
    }

    #[test]
    fn overlong_names_are_refused() {
        let name = format!("iqn.2026-11.com.example:{}", "x".repeat(200));
        let msg = validate_iqn(&name).unwrap_err().to_string();
        assert!(msg.contains("limit is 223"), "{msg}");
    }

    #[rstest]
    #[case(
        "iscsi://127.0.0.1/iqn.2026-11.invalid.fts:t/1",
        "127.0.0.1",
        3260,
        "iqn.2026-11.invalid.fts:t",
        1
    )]
    #[case("iscsi://127.0.0.1:13261/iqn.x:y/0", "127.0.0.1", 13261, "iqn.x:y", 0)]
    #[case(
        "iscsi://san-a.example.com:3261/iqn.x:y/255",
        "san-a.example.com",
        3261,
        "iqn.x:y",
        255
    )]
    #[case("iscsi://[::1]:3260/iqn.x:y/3", "::1", 3260, "iqn.x:y", 3)]
    #[case("iscsi://[fe80::1]/iqn.x:y/3", "fe80::1", 3260, "iqn.x:y", 3)]
    fn good_urls(
        #[case] url: &str,
        #[case] host: &str,
        #[case] port: u16,
        #[case] target: &str,
        #[case] lun: u16,
    ) {
        let u = IscsiUrl::parse(url).unwrap();
        assert_eq!(
            u,
            IscsiUrl {
                host: host.into(),
                port,
                target: target.into(),
                lun
            }
        );
        assert_eq!(IscsiUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn portal_brackets_ipv6() {
        assert_eq!(
            IscsiUrl::parse("iscsi://[::1]/t/0").unwrap().portal(),
            "[::1]:3260"
        );
        assert_eq!(IscsiUrl::parse("iscsi://h:1/t/0").unwrap().portal(), "h:1");
    }

    #[rstest]
    #[case("http://h/t/1", "must start with iscsi://")]
    #[case("iscsi://h/iqn.x:y", "missing LUN")]
    #[case("iscsi://h/iqn.x:y/", "missing LUN")]
    #[case("iscsi://h", "missing target")]
    #[case("iscsi://h//1", "missing target")]
    #[case("iscsi://h:abc/t/1", "bad port \"abc\"")]
    #[case("iscsi://h:0/t/1", "bad port \"0\"")]
    #[case("iscsi://h:70000/t/1", "bad port \"70000\"")]
    #[case("iscsi://h:/t/1", "bad port \"\"")]
    #[case("iscsi://h:+5/t/1", "bad port")]
    #[case("iscsi:///t/1", "missing host")]
    #[case("iscsi://:3260/t/1", "missing host")]
    #[case("iscsi://h/t/x", "bad LUN \"x\"")]
    #[case("iscsi://h/t/256", "bad LUN \"256\"")]
    #[case("iscsi://h/t/-1", "bad LUN")]
    #[case("iscsi://h/t/1/2", "unexpected path")]
    #[case("iscsi://user%pw@h/t/1", "credentials")]
    #[case("iscsi://h/t/1?x=1", "'?'")]
    #[case("iscsi://h o/t/1", "' '")]
    #[case("iscsi://[::1/t/1", "unterminated")]
    #[case("iscsi://[nope]/t/1", "bad IPv6")]
    #[case("iscsi://[::1]x/t/1", "after the IPv6")]
    #[case("iscsi://h!/t/1", "bad host name")]
    fn bad_urls(#[case] url: &str, #[case] why: &str) {
        let err = IscsiUrl::parse(url).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        assert!(msg.contains(why), "{msg}");
        assert!(msg.contains(IscsiUrl::FORM), "{msg}");
    }
}
