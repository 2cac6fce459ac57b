//! Text from the far side (listings, paths, error replies) never brings a
//! control character to the operator's terminal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod robust_common;

use robust_common::{text, Rig};

const EVIL: &str = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J.txt";

#[test]
fn listings_and_error_replies_reach_the_terminal_escaped() {
    let rig = Rig::new();
    std::fs::write(rig.root.join(EVIL), b"x").unwrap();
    let o = rig.client("alice", &["dir", "srv"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!o.stdout.contains(&0x1b), "a raw ESC reached the terminal");
    assert!(!o.stdout.contains(&0x07), "a raw BEL reached the terminal");
    let shown = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        shown.contains("evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J.txt"),
        "{shown}"
    );

    // An error reply naming a path with escapes.
    let missing = "nope\u{1b}[31m.txt";
    let out = rig.local("out");
    let o = rig.client("alice", &["get", "srv", missing, out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        !o.stderr.contains(&0x1b),
        "a raw ESC in the error: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\\u{1b}"),
        "{}",
        text(&o)
    );

    // The same through the shell's script mode.
    let mut sh = rig
        .cmd("alice", &["shell", "srv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = sh.stdin.take().unwrap();
        writeln!(stdin, "dir").unwrap();
        writeln!(stdin, "pwd").unwrap();
    }
    let o = robust_common::wait_output(sh, robust_common::DEADLINE, "shell");
    assert!(o.status.success(), "{}", text(&o));
    assert!(!o.stdout.contains(&0x1b), "a raw ESC from the shell");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("evil\\u{1b}"),
        "{}",
        text(&o)
    );
}
