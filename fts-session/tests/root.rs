//! Path confinement tests against real temporary directories and symlinks.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fts_session::{Access, Confinement, ErrorCode, Response, Root, RootError};
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

/// Both ways of opening beneath the root.
const BOTH: [Confinement; 2] = [Confinement::Openat2, Confinement::Walk];

fn ino(fd: impl std::os::fd::AsFd) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::File::from(fd.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    (m.dev(), m.ino())
}

fn ino_of(p: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.dev(), m.ino())
}

/// `open` refuses exactly what `resolve_existing` refuses (with the same
/// class), and otherwise opens the very file the check resolved, either way.
#[rstest]
fn open_agrees_with_the_check(
    #[values(Confinement::Openat2, Confinement::Walk)] how: Confinement,
    #[values(
        "a/b.txt",
        "",
        ".",
        "a/../b.txt",
        "inside/b.txt",
        "inside_file",
        "../secret",
        "/etc/passwd",
        "etc/passwd",
        "up/secret",
        "out_file",
        "dangling",
        "dangling_in",
        "loop",
        "nope/x",
        "a/b.txt/x",
        "a\0b"
    )]
    remote: &str,
) {
    let fx = fixture();
    let root = Root::new(&fx.root_dir).unwrap().with_confinement(how);
    assert_eq!(root.confinement(), how);
    match root.resolve_existing(remote) {
        Ok(path) => {
            let fd = root.open(remote, Access::Inspect).unwrap();
            assert_eq!(ino(&fd), ino_of(&path), "{remote:?}");
        }
        Err(e) => {
            let got = root.open(remote, Access::Inspect).unwrap_err();
            assert_eq!(got.code(), e.code(), "{remote:?}: {got}");
        }
    }
}

#[test]
fn open_for_each_access() {
    use std::io::Read as _;
    let fx = fixture();
    for how in BOTH {
        let root = Root::new(&fx.root_dir).unwrap().with_confinement(how);
        let mut s = String::new();
        fs::File::from(root.open("inside_file", Access::Read).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ab", "{how:?}");
        // Listing needs a directory; a file is not one.
        root.open("sub", Access::List).unwrap();
        let e = root.open("b.txt", Access::List).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotADirectory, "{how:?}");
        let e = root.open("b.txt", Access::Directory).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotADirectory, "{how:?}");
    }
}

#[test]
fn open_new_gives_the_directory_and_name_the_check_resolved() {
    let fx = fixture();
    symlink(".", fx.root_dir.join("here")).unwrap();
    for how in BOTH {
        let root = Root::new(&fx.root_dir).unwrap().with_confinement(how);
        for (remote, dir, name) in [
            ("new.txt", "", "new.txt"),
            ("a/new.txt", "a", "new.txt"),
            ("inside/new.txt", "a", "new.txt"),
            ("inside_file", "a", "b.txt"),
            ("sub/../a/new.txt", "a", "new.txt"),
        ] {
            let t = root.open_new(remote).unwrap();
            assert_eq!(ino(t.dir()), ino_of(&fx.root_dir.join(dir)), "{remote:?}");
            assert_eq!(t.name(), name, "{remote:?}");
            assert_eq!(t.path(), fx.root_dir.join(dir).join(name), "{remote:?}");
        }
        for (remote, code) in [
            ("../new.txt", ErrorCode::OutsideRoot),
            ("etc/new.txt", ErrorCode::OutsideRoot),
            ("out_file", ErrorCode::OutsideRoot),
            ("nodir/new.txt", ErrorCode::NotFound),
            ("b.txt/new.txt", ErrorCode::NotADirectory),
            ("a/..", ErrorCode::BadRequest),
            // A link to the root itself has no name to put a file under.
            ("here", ErrorCode::IsADirectory),
        ] {
            let e = root.open_new(remote).unwrap_err();
            assert_eq!(e.code(), code, "{how:?} {remote:?}: {e}");
        }
    }
}

#[test]
fn root_is_opened_once_and_survives_a_rename() {
    let fx = fixture();
    let root = Root::new(&fx.root_dir).unwrap();
    let moved = fx.outside.join("moved");
    fs::rename(&fx.root_dir, &moved).unwrap();
    // Something else now has the root's old path.
    fs::create_dir(&fx.root_dir).unwrap();
    fs::write(fx.root_dir.join("b.txt"), b"impostor").unwrap();
    // The check still runs by path; what is opened is beneath the
    // directory that was opened as the root.
    let fd = root.open("b.txt", Access::Inspect).unwrap();
    assert_eq!(ino(&fd), ino_of(&moved.join("b.txt")));
}

/// Keeps replacing `target` by a symlink to `link_to` and back by a hard
/// link of `master`, counting round trips in `swaps`, until `stop`.
fn swap_file(
    target: PathBuf,
    master: PathBuf,
    link_to: PathBuf,
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
) {
    let stage = master.parent().unwrap().to_path_buf();
    while !stop.load(Ordering::Relaxed) {
        symlink(&link_to, stage.join("l")).unwrap();
        fs::rename(stage.join("l"), &target).unwrap();
        fs::hard_link(&master, stage.join("f")).unwrap();
        fs::rename(stage.join("f"), &target).unwrap();
        swaps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Until both outcomes were seen 200 times and `swaps` reached 1000 (at
/// most 30 s).
fn racing(ok: usize, refused: usize, swaps: &AtomicU64, started: Instant) -> bool {
    let enough = ok >= 200 && refused >= 200 && swaps.load(Ordering::Relaxed) >= 1000;
    !enough && !timed_out(started)
}

fn timed_out(started: Instant) -> bool {
    started.elapsed() > Duration::from_secs(30)
}

/// In-process race on both ways of opening: a file inside the root keeps
/// being replaced by a symlink to a file outside; opening it for reading
/// gives the inside bytes or a refusal, never the outside file.
#[test]
fn a_swapped_in_symlink_never_opens_a_file_outside() {
    use std::io::Read as _;
    for how in BOTH {
        let fx = fixture();
        let stage = fx.outside.join("stage");
        fs::create_dir(&stage).unwrap();
        fs::write(stage.join("master"), b"inside").unwrap();
        fs::hard_link(stage.join("master"), fx.root_dir.join("f")).unwrap();
        let root = Root::new(&fx.root_dir).unwrap().with_confinement(how);
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let args = (
                fx.root_dir.join("f"),
                stage.join("master"),
                fx.outside.join("secret"),
                stop.clone(),
                swaps.clone(),
            );
            std::thread::spawn(move || swap_file(args.0, args.1, args.2, args.3, args.4))
        };
        let (mut inside, mut refused, mut changed) = (0, 0, 0);
        let started = Instant::now();
        // The walk also says when the window was hit: run until it was.
        let hit = |changed: usize| how != Confinement::Walk || changed > 0;
        while racing(inside, refused, &swaps, started) || (!hit(changed) && !timed_out(started)) {
            match root.open("f", Access::Read) {
                Ok(fd) => {
                    let mut got = Vec::new();
                    fs::File::from(fd).read_to_end(&mut got).unwrap();
                    assert_eq!(got, b"inside", "{how:?}: read the file outside the root");
                    inside += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(e.code(), ErrorCode::OutsideRoot),
                        "{how:?}: unexpected {e}"
                    );
                    // The walk says when the check passed but the open met
                    // the link: the window between them was hit.
                    changed += usize::from(matches!(e, RootError::Changed { .. }));
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let swaps = swaps.load(Ordering::Relaxed);
        assert!(
            inside >= 200 && refused >= 200 && swaps >= 1000,
            "{how:?}: did not race: {inside} opened, {refused} refused, {swaps} swaps"
        );
        assert!(hit(changed), "the check-to-open window was never hit");
    }
}

/// In-process race on the target of a put: the directory the target is
/// in keeps being replaced by a symlink to a directory outside the root
/// (and back); files created in the directory `open_new` returns are never
/// created outside.
#[test]
fn a_directory_swapped_for_a_symlink_never_takes_a_new_file_outside() {
    for how in BOTH {
        let fx = fixture();
        let (d, real, link) = (
            fx.root_dir.join("d"),
            fx.outside.join("real"),
            fx.outside.join("link"),
        );
        fs::create_dir(&d).unwrap();
        let outdir = fx.outside.join("outdir");
        let root = Root::new(&fx.root_dir).unwrap().with_confinement(how);
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let swapper = {
            let (d, stop, swaps) = (d.clone(), stop.clone(), swaps.clone());
            let outdir = outdir.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A symlink cannot be renamed over a directory: move
                    // the directory aside, the symlink in, and back.
                    fs::rename(&d, &real).unwrap();
                    symlink(&outdir, &link).unwrap();
                    fs::rename(&link, &d).unwrap();
                    fs::remove_file(&d).unwrap();
                    fs::rename(&real, &d).unwrap();
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let (mut created, mut refused) = (0, 0);
        let started = Instant::now();
        while racing(created, refused, &swaps, started) {
            let name = format!("x{}", created + refused);
            match root.open_new(&format!("d/{name}")) {
                Ok(t) => {
                    let flags = rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::CREATE
                        | rustix::fs::OFlags::EXCL;
                    let mode = rustix::fs::Mode::from_raw_mode(0o644);
                    drop(rustix::fs::openat(t.dir(), t.name(), flags, mode).unwrap());
                    created += 1;
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e.code(),
                            ErrorCode::OutsideRoot | ErrorCode::NotFound | ErrorCode::NotADirectory
                        ),
                        "{how:?}: unexpected {e}"
                    );
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let swaps = swaps.load(Ordering::Relaxed);
        let leaked: Vec<_> = fs::read_dir(&outdir).unwrap().collect();
        assert!(leaked.is_empty(), "{how:?}: created outside: {leaked:?}");
        assert_eq!(fs::read_dir(&d).unwrap().count(), created, "{how:?}");
        assert!(
            created >= 200 && refused >= 200 && swaps >= 1000,
            "{how:?}: did not race: {created} created, {refused} refused, {swaps} swaps"
        );
    }
}
