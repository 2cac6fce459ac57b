//! Real `fts` processes meeting a misbehaving disk (`FTS_FAULT_PLAN`, built
//! with the `fault-injection` feature, which `cargo xtask ci` enables):
//! flipped bits in the segments a server and a client read are resent and
//! the files arrive identical; a client whose disk starts failing its
//! writes gets a clear device error, publishes nothing, and the server
//! keeps serving others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(not(feature = "fault-injection"))]
#[test]
fn fault_injection_needs_its_feature() {
    hil::skip::skip(
        "faults_cli",
        "built without the fault-injection feature (cargo test -p fts-cli --features fault-injection)",
    );
}

#[cfg(feature = "fault-injection")]
mod with_faults {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output};
    use std::time::{Duration, Instant};

    use fts_blockdev::OpenOptions;
    use fts_layout::{Role, LB};
    use fts_session::Shared;

    fn fts() -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fts"));
        c.env_remove("FTS_DEVICE")
            .env_remove("FTS_NAME")
            .env_remove("FTS_FAULT_PLAN");
        c
    }

    fn text(o: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    struct Rig {
        dir: tempfile::TempDir,
        dev: String,
        root: PathBuf,
    }

    impl Rig {
        fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let dev = dir.path().join("shared.img").display().to_string();
            let o = fts()
                .args([
                    "-d",
                    &dev,
                    "format",
                    "--size",
                    "32M",
                    "--segment-size",
                    "64K",
                    "--ring-entries",
                    "16",
                    "--batch",
                    "4",
                    "--max-connections",
                    "4",
                    "--lease-timeout-ms",
                    "2000",
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
            let root = dir.path().join("root");
            std::fs::create_dir_all(&root).unwrap();
            Rig { dir, dev, root }
        }

        /// LB range of every data segment of `slot`.
        fn segment_lbs(&self, slot: u32) -> (u64, u64) {
            let dev = fts_blockdev::open(&self.dev, &OpenOptions::default()).unwrap();
            let s = Shared::open(dev).unwrap();
            let g = s.geometry();
            let mut lo = u64::MAX;
            let mut hi = 0;
            for role in Role::BOTH {
                for i in 0..g.ring_entries {
                    let (_, off) = g.segment_location(g.ring_segment(slot, role, i)).unwrap();
                    lo = lo.min(off / LB as u64);
                    hi = hi.max(off / LB as u64 + u64::from(g.seg_lbs));
                }
            }
            (lo, hi)
        }

        fn serve(&self, plan: Option<String>) -> (Server, PathBuf) {
            let log = self.dir.path().join("serve.log");
            let mut c = fts();
            c.args(["-d", &self.dev, "-n", "srv", "serve", "--root"])
                .arg(&self.root)
                .stderr(std::fs::File::create(&log).unwrap());
            if let Some(p) = plan {
                c.env("FTS_FAULT_PLAN", p);
            }
            let child = c.spawn().unwrap();
            let t0 = Instant::now();
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("serving as")
            {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            (Server(child), log)
        }

        fn client(&self, plan: Option<&str>, args: &[&str], paths: &[&Path]) -> Output {
            let mut c = fts();
            c.args(["-d", &self.dev, "-n", "cli"]).args(args);
            for p in paths {
                c.arg(p);
            }
            if let Some(p) = plan {
                c.env("FTS_FAULT_PLAN", p);
            }
            c.output().unwrap()
        }
    }

    fn fired(log: &Path) -> usize {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[test]
    fn flipped_segment_reads_in_both_processes_are_resent_and_files_arrive_intact() {
        let rig = Rig::new();
        let (lo, hi) = rig.segment_lbs(1);
        let srv_log = rig.dir.path().join("srv-faults.log");
        let cli_log = rig.dir.path().join("cli-faults.log");
        let plan = |log: &Path| {
            format!(
                "seed=3; log={}; flip bits=1 op=read lbs={lo}..{hi} skip=3 times=4",
                log.display()
            )
        };
        let (_srv, _) = rig.serve(Some(plan(&srv_log)));
        let data: Vec<u8> = (0..2_500_000u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 7) as u8)
            .collect();
        let src = rig.dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let o = rig.client(
            Some(&plan(&cli_log)),
            &["put", "srv"],
            &[&src, Path::new("up.bin")],
        );
        assert!(o.status.success(), "{}", text(&o));
        let back = rig.dir.path().join("back.bin");
        let o = rig.client(Some(&plan(&cli_log)), &["get", "srv", "up.bin"], &[&back]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(std::fs::read(rig.root.join("up.bin")).unwrap(), data);
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert!(fired(&srv_log) >= 1, "no fault fired in the server");
        assert!(fired(&cli_log) >= 1, "no fault fired in the client");
    }

    #[test]
    fn a_client_whose_disk_fails_gets_a_device_error_and_publishes_nothing() {
        let rig = Rig::new();
        let (lo, hi) = rig.segment_lbs(1);
        let (_srv, _) = rig.serve(None);
        let log = rig.dir.path().join("cli-faults.log");
        // The client's segment writes fail from the 3rd on (a dying path).
        let plan = format!(
            "seed=1; log={}; eio op=write lbs={lo}..{hi} skip=2",
            log.display()
        );
        let src = rig.dir.path().join("src.bin");
        std::fs::write(&src, vec![0x42; 3 << 20]).unwrap();
        let o = rig.client(Some(&plan), &["put", "srv"], &[&src, Path::new("up.bin")]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let said = text(&o);
        assert!(said.contains("write segments"), "{said}");
        assert!(fired(&log) >= 1, "the write error never fired");
        assert!(!rig.root.join("up.bin").exists(), "a file was published");
        // The server still serves another client with a healthy disk.
        let o = rig.client(None, &["put", "srv"], &[&src, Path::new("ok.bin")]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            std::fs::read(rig.root.join("ok.bin")).unwrap(),
            vec![0x42; 3 << 20]
        );
    }
}
