//! Builds the C test programs in `tests/c/` and `examples/c/seed_benchmark.cpp`
//! against the library cargo built for this test run, and runs them.
//!
//! The library is found beside this test binary: cargo puts integration tests in
//! `target/<profile>/deps/` and `libpagesnap.{so,a}` in `target/<profile>/`.
//! `CC` / `CXX` choose the compilers (default `cc` / `c++`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/`, holding libpagesnap.so and libpagesnap.a.
///
/// `cargo test` builds a cdylib/staticlib crate's test harness but not the
/// libraries themselves, so this builds them (once per run; a no-op when they are
/// up to date), with the profile this test binary was built with.
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cmd.args(["build", "-q", "-p", "pagesnap-ffi"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(manifest_dir())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p pagesnap-ffi failed");
    });
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps.parent().expect("profile dir"), deps] {
        if dir.join("libpagesnap.so").is_file() && dir.join("libpagesnap.a").is_file() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "libpagesnap.so / libpagesnap.a not found beside {}: cargo builds them for \
         `cargo test -p pagesnap-ffi`",
        exe.display()
    );
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pagesnap-ffi-c");
    std::fs::create_dir_all(&dir).expect("create the C build dir");
    dir
}

fn tool(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let text = format!(
        "{shown}\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "failed ({}): {text}", out.status);
    out
}

enum Link {
    Shared,
    Static,
}

/// Compiles the C program `tests/c/<name>.c` and returns the binary's path.
fn build_c(name: &str, link: Link) -> PathBuf {
    let lib = lib_dir();
    let exe = out_dir().join(format!(
        "{name}-{}",
        match link {
            Link::Shared => "shared",
            Link::Static => "static",
        }
    ));
    let mut cmd = Command::new(tool("CC", "cc"));
    cmd.args([
        "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
    ])
    .arg("-I")
    .arg(manifest_dir().join("include"))
    .arg(manifest_dir().join("tests/c").join(format!("{name}.c")))
    .arg("-o")
    .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg("-L")
                .arg(&lib)
                .arg(format!("-Wl,-rpath,{}", lib.display()))
                .arg("-lpagesnap");
        }
        Link::Static => {
            cmd.arg(lib.join("libpagesnap.a")).args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]);
        }
    }
    run(&mut cmd);
    exe
}

fn run_program(exe: &Path) -> String {
    run_program_with(exe, &[])
}

fn run_program_with(exe: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = run(Command::new(exe).args(args).env_remove("PAGESNAP_TRACKING"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("ok: "), "no closing ok line:\n{stdout}");
    stdout
}

#[test]
fn c_round_trips_on_every_backend() {
    run_program(&build_c("roundtrip", Link::Shared));
}

#[test]
fn c_heap_allocates_rolls_back_and_is_thread_safe() {
    run_program(&build_c("heap", Link::Shared));
}

/// Regions and clones at chosen addresses, and a heap continued by a fresh
/// process (the program re-executes itself) from a snapshot file.
#[test]
fn c_addresses_and_a_fresh_process_at_the_origin() {
    let dir = out_dir().join("addresses");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    run_program_with(&build_c("addresses", Link::Shared), &[dir.as_os_str()]);
}

/// A background save started under the caller's mutex returns at the instant;
/// the file holds that instant while a writer thread goes on.
#[test]
fn c_background_save_start_returns_at_the_instant() {
    let dir = out_dir().join("save_start");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    run_program_with(&build_c("save_start", Link::Shared), &[dir.as_os_str()]);
}

#[test]
fn c_clones_instantiate_and_reset() {
    run_program(&build_c("clones", Link::Shared));
}

#[test]
fn c_every_error_path_is_reported() {
    run_program(&build_c("errors", Link::Shared));
}

#[test]
fn c_pthread_writers_and_concurrent_calls() {
    run_program(&build_c("threads", Link::Shared));
}

/// A background snapshot beside pthread writers. (It once exposed a race: a writer
/// faulting as the copy ended could read freed batch states; the states now live
/// as long as the region.)
#[test]
fn c_background_snapshot_beside_pthread_writers() {
    run_program(&build_c("background", Link::Shared));
}

/// A refused second background start leaves the first exact; reading a snapshot
/// into memory under a background snapshot does not deadlock.
#[test]
fn c_background_refusals_and_reads_into_protected_memory() {
    run_program(&build_c("reliability", Link::Shared));
}

/// A program that blocks signals in main: refusals while SIGSEGV is blocked,
/// pthread writers (and a SIGUSR1 handler writing the region) through
/// background snapshots once only the fault signals are left unblocked.
#[test]
fn c_blocked_signals_and_a_handler_writing_the_region() {
    run_program(&build_c("signals", Link::Shared));
}

/// Converging snapshots and saves beside a pthread writer: finish at a
/// quiescent point equals the region, whole-region calls are refused (not
/// blocked) meanwhile, an abandoned save leaves no file.
#[test]
fn c_converging_beside_a_pthread_writer() {
    let dir = example_scratch("converging");
    run_program_with(&build_c("converging", Link::Shared), &[dir.as_os_str()]);
}

/// Out of memory is a reported error (not a caught panic), and the next
/// snapshot is exact.
#[test]
fn c_out_of_memory_is_an_error_and_the_next_snapshot_exact() {
    run_program(&build_c("oom", Link::Shared));
}

/// fork(): a child's calls on an inherited region are refused (once, ps_restore
/// in a child crashed it with SIGSEGV); the parent stays exact.
#[test]
fn c_fork_child_is_refused_and_parent_exact() {
    run_program(&build_c("fork", Link::Shared));
}

#[test]
fn c_save_load_and_file_errors() {
    let dir = out_dir().join("files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    run_program_with(&build_c("files", Link::Shared), &[dir.as_os_str()]);
}

#[test]
fn c_static_library_links_and_works() {
    let exe = build_c("roundtrip", Link::Static);
    // Statically linked: no dependency on libpagesnap.so.
    let ldd = Command::new("ldd").arg(&exe).output();
    if let Ok(ldd) = ldd {
        assert!(!String::from_utf8_lossy(&ldd.stdout).contains("libpagesnap"));
    }
    run_program(&exe);
}

/// install.sh into a scratch prefix, then build with `pkg-config --cflags --libs`.
#[test]
fn install_script_and_pkg_config() {
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    run(Command::new("sh")
        .arg(manifest_dir().join("install.sh"))
        .arg(&prefix)
        .arg(lib_dir()));
    // Installed stripped, the debug info kept beside them for profilers.
    let size = |p: PathBuf| std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    if Command::new("strip").arg("--version").output().is_ok() {
        for lib in ["libpagesnap.so", "libpagesnap.a"] {
            let (built, installed) = (
                size(lib_dir().join(lib)),
                size(prefix.join("lib").join(lib)),
            );
            assert!(
                installed > 0 && installed < built,
                "{lib}: installed {installed} bytes, built {built}"
            );
        }
        assert!(size(prefix.join("lib/debug/libpagesnap.so.debug")) > 0);
    }
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/pagesnap.pc")).expect("pc");
    assert!(pc.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));
    assert!(!pc.contains('@'), "unfilled placeholder in:\n{pc}");

    if Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_err()
    {
        // .ci/run installs pkg-config; a developer machine may lack it.
        println!("SKIP pkg-config part: pkg-config is not installed");
        return;
    }
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .args(["--cflags", "--libs", "pagesnap"]));
    let flags = String::from_utf8(flags.stdout).expect("utf-8 flags");
    let exe = out_dir().join("roundtrip-pkg-config");
    run(Command::new(tool("CC", "cc"))
        .args(["-std=c11", "-O1", "-pthread"])
        .arg(manifest_dir().join("tests/c/roundtrip.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display())));
    run_program(&exe);
}

/// examples/c/hello.c, the README's C example.
#[test]
fn readme_example_builds_and_runs() {
    let lib = lib_dir();
    let exe = out_dir().join("hello");
    run(Command::new(tool("CC", "cc"))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(manifest_dir().join("../../examples/c/hello.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lpagesnap"));
    let out = run(&mut Command::new(&exe));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("first state (tracking: "));
}

/// Builds examples/c/seed_benchmark.cpp in one mode.
fn build_seed(mode: &str, defines: &[&str]) -> PathBuf {
    let lib = lib_dir();
    let src = manifest_dir().join("../../examples/c/seed_benchmark.cpp");
    let exe = out_dir().join(format!("seed_benchmark-{mode}"));
    run(Command::new(tool("CXX", "c++"))
        .args([
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
        ])
        .args(defines)
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lpagesnap"));
    exe
}

fn run_seed(exe: &Path) {
    let out = run(Command::new(exe).args(["16", "2"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("duration (s):"), "{stdout}");
    assert!(stdout.contains("snapshot verified"), "{stdout}");
}

/// examples/c/seed_benchmark.cpp at 16 MiB with 2 workers: the seed's fork mode and
/// pagesnap with a synchronous snapshot run; the background mode is built here and
/// run by the test below.
#[test]
fn seed_benchmark_builds_and_runs_small() {
    build_seed("background", &[]);
    run_seed(&build_seed("fork", &["-DWITH_FORK"]));
    run_seed(&build_seed("sync", &["-DPAGESNAP_SYNC_SNAPSHOT"]));
}

/// The seed benchmark's default mode, on the background snapshot. Ignored for the
/// same library race as `c_background_snapshot_beside_pthread_writers`.
#[test]
fn seed_benchmark_background_runs_small() {
    run_seed(&build_seed("background-run", &[]));
}

/// The path of a static library the C compiler finds, if it is installed.
fn static_lib(name: &str) -> Option<PathBuf> {
    let out = Command::new(tool("CC", "cc"))
        .arg(format!("-print-file-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (path.is_absolute() && path.is_file()).then_some(path)
}

/// Builds a worked example (examples/c/<dir>/<name>.c) as its header comment says:
/// non-PIE, the client library linked statically. `None` (and a SKIP line) when
/// the library is not installed.
fn build_example(dir: &str, name: &str, lib: &str, include: &[&str]) -> Option<PathBuf> {
    let Some(archive) = static_lib(lib) else {
        println!("SKIP examples/c/{dir}: {lib} not found (install Debian's lib{dir}-dev packages: see .ci/run)");
        return None;
    };
    let libdir = lib_dir();
    let exe = out_dir().join(name);
    let examples = manifest_dir().join("../../examples/c");
    let mut cmd = Command::new(tool("CC", "cc"));
    cmd.args([
        "-std=gnu11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pthread",
        "-no-pie",
    ])
    .arg("-I")
    .arg(manifest_dir().join("include"))
    .arg("-I")
    .arg(&examples)
    .args(include.iter().flat_map(|i| ["-I", i]))
    .arg(examples.join(dir).join(format!("{name}.c")))
    .arg("-o")
    .arg(&exe)
    .arg("-L")
    .arg(&libdir)
    .arg(format!("-Wl,-rpath,{}", libdir.display()))
    .arg("-lpagesnap")
    .arg(archive)
    .args(["-lm", "-ldl"]);
    run(&mut cmd);
    Some(exe)
}

fn example_scratch(name: &str) -> PathBuf {
    let dir = out_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// examples/c/sqlite: rollback against SAVEPOINT and serialize, snapshots restored
/// in any order, a background save beside a writer thread checked with
/// `PRAGMA integrity_check`, and a fresh process continuing the saved database.
#[test]
fn sqlite_example_checks() {
    let Some(exe) = build_example("sqlite", "sqlite_pagesnap", "libsqlite3.a", &[]) else {
        return;
    };
    let dir = example_scratch("sqlite");
    let out = run(Command::new(&exe).arg("check").arg(&dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("continued: integrity ok, fingerprint matches"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: sqlite 3."), "{stdout}");
}

/// examples/c/sqlite/sqlite_writer_rate.c, once at a small size: a writer
/// thread inserting beside each way of copying the database (background
/// snapshot and save, converging snapshot and save, fork + serialize; after
/// an earlier snapshot, and into a reserved store); every
/// copy passes PRAGMA integrity_check and holds the rows committed at its
/// instant. The rates are printed, not judged: CI machines are too noisy.
#[test]
fn sqlite_writer_rate_runs() {
    let Some(exe) = build_example("sqlite", "sqlite_writer_rate", "libsqlite3.a", &[]) else {
        return;
    };
    let dir = example_scratch("sqlite-rate");
    let out = run(Command::new(&exe).arg("8").arg("1").arg(&dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: writer rate measured"), "{stdout}");
    for m in ["snapshot", "save", "converge", "converge-save", "fork"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("median {m}: ")))
            .unwrap_or_else(|| panic!("no median for {m}: {stdout}"));
        let ratio: f64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unreadable ratio: {line}"));
        assert!(ratio.is_finite() && (0.0..100.0).contains(&ratio), "{line}");
    }
    // After an earlier snapshot, freed: the point-in-time snapshot stages into
    // the store's free frames, and its copy is checked the same way.
    let out = run(Command::new(&exe)
        .arg("8")
        .arg("1")
        .arg(&dir)
        .arg("snapshot,save")
        .arg("steady"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("after an earlier snapshot"), "{stdout}");
    assert!(stdout.contains("ok: writer rate measured"), "{stdout}");
    // With the store's memory reserved first (ps_store_reserve), and the
    // control that copies nothing.
    let out = run(Command::new(&exe)
        .arg("8")
        .arg("1")
        .arg(&dir)
        .arg("snapshot,converge,none")
        .arg("reserve"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("store memory reserved"), "{stdout}");
    assert!(
        stdout.contains("none run 1: ") && stdout.contains("no copy"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: writer rate measured"), "{stdout}");
}

/// examples/c/lua: snapshot/mutate/restore cycles checked against a deep copy
/// and fork, and a fresh process continuing the saved interpreter state.
#[test]
fn lua_example_checks() {
    let Some(exe) = build_example(
        "lua",
        "lua_pagesnap",
        "liblua5.4.a",
        &["/usr/include/lua5.4"],
    ) else {
        return;
    };
    let dir = example_scratch("lua");
    let out = run(Command::new(&exe).arg("check").arg(&dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("continued: checksums match"), "{stdout}");
    assert!(stdout.contains("ok: Lua 5.4"), "{stdout}");
}
