//! Path confinement tests against real temporary directories and symlinks.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use fts_session::{ErrorCode, Response, Root, RootError};
use rstest::rstest;
use tempfile::TempDir;

/// Layout (inside `<tmp>/served`, the root):
///   a/b.txt   b.txt   sub/deep/f   inside -> a   inside_file -> a/b.txt
///   etc -> /etc   up -> ..   out_file -> <tmp>/secret   dangling -> <tmp>/nope
///   chain -> dangling   dangling_in -> a/missing   loop -> loop
/// and outside: `<tmp>/secret`, `<tmp>/outdir/`.
struct Fixture {
    _tmp: TempDir,
    root_dir: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().canonicalize().unwrap();
    let root_dir = outside.join("served");
    fs::create_dir_all(root_dir.join("a")).unwrap();
    fs::create_dir_all(root_dir.join("sub/deep")).unwrap();
    fs::write(root_dir.join("a/b.txt"), b"ab").unwrap();
    fs::write(root_dir.join("b.txt"), b"b").unwrap();
    fs::write(root_dir.join("sub/deep/f"), b"f").unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    fs::create_dir(outside.join("outdir")).unwrap();
    symlink(root_dir.join("a"), root_dir.join("inside")).unwrap();
    symlink("a/b.txt", root_dir.join("inside_file")).unwrap();
    symlink("/etc", root_dir.join("etc")).unwrap();
    symlink("..", root_dir.join("up")).unwrap();
    symlink(outside.join("secret"), root_dir.join("out_file")).unwrap();
    symlink(outside.join("nope"), root_dir.join("dangling")).unwrap();
    symlink("dangling", root_dir.join("chain")).unwrap();
    symlink("a/missing", root_dir.join("dangling_in")).unwrap();
    symlink("loop", root_dir.join("loop")).unwrap();
    Fixture {
        _tmp: tmp,
        root_dir,
        outside,
    }
}

fn code(r: Result<PathBuf, RootError>) -> Result<&'static str, ErrorCode> {
    // Only the success/failure class matters for the table below.
    r.map(|_| "ok").map_err(|e| e.code())
}

#[rstest]
#[case::plain("a/b.txt", Ok("a/b.txt"))]
#[case::top("b.txt", Ok("b.txt"))]
#[case::empty_is_cwd("", Ok(""))]
#[case::dot_is_cwd(".", Ok(""))]
#[case::dotdot_inside("a/../b.txt", Ok("b.txt"))]
#[case::dotdot_deep("sub/deep/../../a/b.txt", Ok("a/b.txt"))]
#[case::symlink_dir_inside("inside/b.txt", Ok("a/b.txt"))]
#[case::symlink_file_inside("inside_file", Ok("a/b.txt"))]
#[case::escape("../x", Err(ErrorCode::OutsideRoot))]
#[case::escape_existing("../secret", Err(ErrorCode::OutsideRoot))]
#[case::escape_and_back("../served/b.txt", Err(ErrorCode::OutsideRoot))]
#[case::escape_deep("a/../../secret", Err(ErrorCode::OutsideRoot))]
#[case::absolute("/etc/passwd", Err(ErrorCode::OutsideRoot))]
#[case::absolute_root("/", Err(ErrorCode::OutsideRoot))]
#[case::symlink_to_etc("etc", Err(ErrorCode::OutsideRoot))]
#[case::through_symlink_to_etc("etc/passwd", Err(ErrorCode::OutsideRoot))]
#[case::through_symlink_to_etc_missing("etc/no-such-file-xyz", Err(ErrorCode::OutsideRoot))]
#[case::symlink_up("up", Err(ErrorCode::OutsideRoot))]
#[case::symlink_up_secret("up/secret", Err(ErrorCode::OutsideRoot))]
#[case::symlink_file_out("out_file", Err(ErrorCode::OutsideRoot))]
#[case::dangling_out("dangling", Err(ErrorCode::OutsideRoot))]
#[case::dangling_out_below("dangling/x", Err(ErrorCode::OutsideRoot))]
#[case::dangling_chain_out("chain", Err(ErrorCode::OutsideRoot))]
#[case::dangling_in("dangling_in", Err(ErrorCode::NotFound))]
#[case::symlink_loop("loop", Err(ErrorCode::Io))]
#[case::missing("nope", Err(ErrorCode::NotFound))]
#[case::missing_dir("nope/x", Err(ErrorCode::NotFound))]
#[case::through_file("a/b.txt/x", Err(ErrorCode::NotADirectory))]
#[case::nul("a\0b", Err(ErrorCode::BadRequest))]
fn resolve_existing_table(#[case] remote: &str, #[case] expect: Result<&str, ErrorCode>) {
    let fx = fixture();
    let root = Root::new(&fx.root_dir).unwrap();
    let got = root.resolve_existing(remote);
    match expect {
        Ok(rel) => {
            let path = got.unwrap();
            assert_eq!(
                path,
                fx.root_dir.join(rel).canonicalize().unwrap(),
                "{remote:?}"
            );
            assert!(path.starts_with(root.root()));
        }
        Err(c) => assert_eq!(code(got), Err(c), "{remote:?}"),
    }
}

#[rstest]
#[case::new_top("new.txt", Ok("new.txt"))]
#[case::new_in_dir("a/new.txt", Ok("a/new.txt"))]
#[case::existing("a/b.txt", Ok("a/b.txt"))]
#[case::dotdot_inside("sub/../a/new.txt", Ok("a/new.txt"))]
#[case::via_symlink_dir("inside/new.txt", Ok("a/new.txt"))]
#[case::existing_symlink_inside("inside_file", Ok("a/b.txt"))]
#[case::missing_parent("nodir/new.txt", Err(ErrorCode::NotFound))]
#[case::parent_is_file("b.txt/new.txt", Err(ErrorCode::NotADirectory))]
#[case::name_dotdot("..", Err(ErrorCode::BadRequest))]
#[case::name_dotdot_in_dir("a/..", Err(ErrorCode::BadRequest))]
#[case::name_dot("a/.", Err(ErrorCode::BadRequest))]
#[case::name_empty("", Err(ErrorCode::BadRequest))]
#[case::trailing_slash("a/", Err(ErrorCode::BadRequest))]
#[case::escape("../new.txt", Err(ErrorCode::OutsideRoot))]
#[case::absolute("/tmp/new.txt", Err(ErrorCode::OutsideRoot))]
#[case::absolute_top("/new.txt", Err(ErrorCode::OutsideRoot))]
#[case::into_symlink_to_etc("etc/new.txt", Err(ErrorCode::OutsideRoot))]
#[case::into_symlink_up("up/new.txt", Err(ErrorCode::OutsideRoot))]
#[case::over_symlink_out("out_file", Err(ErrorCode::OutsideRoot))]
#[case::over_dangling_symlink("dangling", Err(ErrorCode::OutsideRoot))]
#[case::over_dangling_chain("chain", Err(ErrorCode::OutsideRoot))]
#[case::over_dangling_inside("dangling_in", Err(ErrorCode::BadRequest))]
#[case::into_dangling_dir("dangling/new.txt", Err(ErrorCode::OutsideRoot))]
#[case::nul("a/x\0y", Err(ErrorCode::BadRequest))]
fn resolve_new_table(#[case] remote: &str, #[case] expect: Result<&str, ErrorCode>) {
    let fx = fixture();
    let root = Root::new(&fx.root_dir).unwrap();
    let got = root.resolve_new(remote);
    match expect {
        Ok(rel) => assert_eq!(got.unwrap(), fx.root_dir.join(rel), "{remote:?}"),
        Err(c) => assert_eq!(code(got), Err(c), "{remote:?}"),
    }
}

#[test]
fn cd_then_relative_resolution_and_pwd() {
    let fx = fixture();
    let mut root = Root::new(&fx.root_dir).unwrap();
    assert_eq!(root.pwd(), "/");
    root.cd("sub/deep").unwrap();
    assert_eq!(root.pwd(), "/sub/deep");
    assert_eq!(
        root.resolve_existing("f").unwrap(),
        fx.root_dir.join("sub/deep/f")
    );
    assert_eq!(
        root.resolve_existing("../../a/b.txt").unwrap(),
        fx.root_dir.join("a/b.txt")
    );
    assert_eq!(
        root.resolve_new("g").unwrap(),
        fx.root_dir.join("sub/deep/g")
    );
    // Two levels up is the root; three is outside.
    assert_eq!(
        code(root.resolve_existing("../../../secret")),
        Err(ErrorCode::OutsideRoot)
    );
    // Absolute paths are refused even after cd (they are not root-relative).
    assert_eq!(
        code(root.resolve_existing("/a/b.txt")),
        Err(ErrorCode::OutsideRoot)
    );
    root.cd("..").unwrap();
    assert_eq!(root.pwd(), "/sub");
    root.cd("../inside").unwrap();
    // cd through a symlink records the canonical directory.
    assert_eq!(root.pwd(), "/a");
    root.cd("..").unwrap();
    assert_eq!(root.pwd(), "/");
    root.cd("").unwrap();
    assert_eq!(root.pwd(), "/");
}

#[test]
fn cd_failures_leave_cwd_unchanged() {
    let fx = fixture();
    let mut root = Root::new(&fx.root_dir).unwrap();
    root.cd("a").unwrap();
    for (remote, expect) in [
        ("..", None),
        ("b.txt", Some(ErrorCode::NotADirectory)),
        ("../b.txt", Some(ErrorCode::NotADirectory)),
        ("../nope", Some(ErrorCode::NotFound)),
        ("../..", Some(ErrorCode::OutsideRoot)),
        ("../etc", Some(ErrorCode::OutsideRoot)),
        ("../up", Some(ErrorCode::OutsideRoot)),
        ("/", Some(ErrorCode::OutsideRoot)),
    ] {
        let mut r = root.clone();
        match expect {
            None => r.cd(remote).unwrap(),
            Some(c) => {
                assert_eq!(r.cd(remote).unwrap_err().code(), c, "{remote:?}");
                assert_eq!(r.pwd(), "/a");
            }
        }
    }
}

#[test]
fn errors_name_remote_path_but_not_root() {
    let fx = fixture();
    let root = Root::new(&fx.root_dir).unwrap();
    let root_text = fx.root_dir.to_string_lossy().into_owned();
    let outside_text = fx.outside.to_string_lossy().into_owned();
    let errors = [
        root.resolve_existing("nope/x").unwrap_err(),
        root.resolve_existing("../secret").unwrap_err(),
        root.resolve_existing("etc/passwd").unwrap_err(),
        root.resolve_existing("out_file").unwrap_err(),
        root.resolve_existing("a/b.txt/x").unwrap_err(),
        root.resolve_new("nodir/new.txt").unwrap_err(),
        root.resolve_new("a/..").unwrap_err(),
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(!msg.contains(&root_text), "{msg}");
        assert!(!msg.contains(&outside_text), "{msg}");
        let Response::Error { code, message } = err.to_response() else {
            panic!("not an error response");
        };
        assert_eq!(code, err.code());
        assert_eq!(message, msg);
    }
    let msg = root.resolve_existing("nope/x").unwrap_err().to_string();
    assert!(msg.contains("nope/x"), "{msg}");
}

#[test]
fn new_requires_a_directory() {
    let fx = fixture();
    assert!(Root::new(fx.root_dir.join("b.txt")).is_err());
    assert!(Root::new(fx.root_dir.join("nope")).is_err());
    // A root given through a symlink is canonicalized.
    let root = Root::new(fx.root_dir.join("inside")).unwrap();
    assert_eq!(root.root(), fx.root_dir.join("a"));
    assert_eq!(
        root.resolve_existing("b.txt").unwrap(),
        fx.root_dir.join("a/b.txt")
    );
    assert_eq!(
        code(root.resolve_existing("../b.txt")),
        Err(ErrorCode::OutsideRoot)
    );
}

#[test]
fn permission_denied_maps_to_permission() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let locked = fx.root_dir.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("f"), b"x").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // root ignores permission bits; only check when they apply.
    let applies = fs::read_dir(&locked).is_err();
    let root = Root::new(&fx.root_dir).unwrap();
    let got = root.resolve_existing("locked/f");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    if applies {
        assert_eq!(code(got), Err(ErrorCode::Permission));
    }
}
