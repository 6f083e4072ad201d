//! The Python package (`client/python`) as its users get it: `pip install ./client/python` in a
//! fresh venv, which builds this package's `agora-manager` with maturin and installs it beside the
//! Python code, then the README's quick start and the Python client's test suite
//! (`client/python/tests`, under pytest), so that `cargo test` covers them.
//!
//! Each test works in its own temporary directory: a fresh venv (`python3 -m venv`, no system
//! site packages) into which pip installs the package from the source tree, with its dependency
//! `msgpack` (and pytest, for the suite) from PyPI. The manager is built into this workspace's
//! target directory (`CARGO_TARGET_DIR`), so after the first build of a checkout pip's cargo run
//! only checks that it is up to date; pip keeps its downloads in its own cache. Nothing is
//! written to the source tree. The Python side's output goes to files, never to pipes a stray
//! child could hold open, and whatever process still mentions the directory when a test ends
//! is killed: a failing or hung test cannot leave managers behind.
//!
//! Needs `python3` with `venv` and `pip`, cargo, and PyPI; fails (with pip's or Python's output)
//! when any is missing or when any Python test fails.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The binary of this build: the suite runs against it (`AGORA_MANAGER_BIN`), so that it checks
/// this checkout's manager with its debug assertions.
const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// The whole suite takes a minute or two; this bounds a hang on a very loaded machine.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
/// The first install of a checkout builds the manager in release mode: minutes on 2 cores.
const PIP_TIMEOUT: Duration = Duration::from_secs(1200);
const QUICK_START_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the manager crate is in the workspace")
        .to_path_buf()
}

fn client_dir() -> PathBuf {
    repo_dir().join("client").join("python")
}

/// The workspace's target directory (`CARGO_TARGET_TMPDIR` is its `tmp`), where pip's cargo
/// builds the manager, so that it reuses what earlier runs built.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .to_path_buf()
}

/// A fresh venv in `dir/venv` with `./client/python` (and `extra` packages) installed by pip.
struct Venv {
    dir: PathBuf,
}

impl Venv {
    fn create(dir: &Path, extra: &[&str]) -> Venv {
        let started = Instant::now();
        let venv = Venv {
            dir: dir.join("venv"),
        };
        let mut make = Command::new("python3");
        make.args(["-m", "venv"])
            .arg(&venv.dir)
            .env_remove("PYTHONPATH");
        let made = run(make, &dir.join("venv.log"), PIP_TIMEOUT);
        assert!(
            made.success(),
            "`python3 -m venv` failed ({:?}; Debian needs python3-venv):\n{}",
            made.status,
            made.output
        );
        let made_in = started.elapsed();
        let mut pip = venv.python();
        // cargo may live beside an installed agora-manager (`cargo install` puts both in
        // ~/.cargo/bin): pip's build needs the full PATH.
        pip.env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-m", "pip", "install", "--no-input"])
            .arg(client_dir())
            .args(extra)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("CARGO_TARGET_DIR", target_dir())
            .env("TMPDIR", scratch(dir));
        let (installed, waited) = {
            let _one_at_a_time = InstallLock::acquire();
            let waited = started.elapsed() - made_in;
            (run(pip, &dir.join("pip.log"), PIP_TIMEOUT), waited)
        };
        assert!(
            installed.success(),
            "`pip install ./client/python` failed ({:?}):\n{}",
            installed.status,
            installed.output
        );
        println!(
            "python3 -m venv: {:.1} s, then pip install ./client/python {}: {:.1} s \
             (after {:.1} s waiting for another install)",
            made_in.as_secs_f64(),
            extra.join(" "),
            (started.elapsed() - made_in - waited).as_secs_f64(),
            waited.as_secs_f64()
        );
        venv
    }

    /// The venv's interpreter, run as a user would run it: no `AGORA_*` variable, no
    /// `PYTHONPATH`, and no `agora-manager` on `PATH` (not the venv's, which is not activated,
    /// nor one a developer built).
    fn python(&self) -> Command {
        let mut command = Command::new(self.dir.join("bin").join("python"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AGORA_") {
                command.env_remove(name);
            }
        }
        command
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .env_remove("VIRTUAL_ENV")
            .env("PATH", path_without_manager());
        command
    }
}

/// Held around `pip install`, so that one build at a time uses the shared target directory:
/// maturin writes each wheel to `target/wheels/` before pip copies it, under the same name for
/// every build, so two installs at once (the tests of this file, or two `cargo test` runs) can
/// corrupt each other's wheel. An exclusive `flock`, which the kernel drops if its holder dies.
struct InstallLock(fs::File);

impl InstallLock {
    fn acquire() -> InstallLock {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pip-install.lock");
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("open the pip install lock file");
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return InstallLock(file);
            }
            let err = std::io::Error::last_os_error();
            assert!(
                err.kind() == std::io::ErrorKind::Interrupted,
                "lock {}: {err}",
                path.display()
            );
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        // SAFETY: as above. Closing the file would release it too; this says so explicitly.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `PATH` less every directory that holds an `agora-manager`.
fn path_without_manager() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("agora-manager").exists())
        .collect();
    std::env::join_paths(kept).expect("PATH entries stay joinable")
}

/// `dir/tmp`, created: the `TMPDIR` of what a test runs, so that it leaves nothing elsewhere.
fn scratch(dir: &Path) -> PathBuf {
    let scratch = dir.join("tmp");
    fs::create_dir_all(&scratch).expect("create the scratch directory");
    scratch
}

/// The first ```` ```python ```` block of `markdown` after the line `heading`.
fn python_block_after(markdown: &str, heading: &str) -> String {
    let after = markdown
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        .1;
    let code = after
        .split_once("```python\n")
        .unwrap_or_else(|| panic!("no python block after {heading:?}"))
        .1;
    let end = code.find("\n```").expect("the python block ends");
    code[..=end].to_string()
}

/// How a child process ended, and what it wrote.
struct Finished {
    status: Option<ExitStatus>,
    output: String,
}

impl Finished {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `command` in its own process group with its output in `log`, killing the group after
/// `timeout`.
fn run(mut command: Command, log: &Path, timeout: Duration) -> Finished {
    let file = fs::File::create(log).expect("create the log file");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone the log file"))
        .stderr(file)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot run {command:?}: {e} (the Python tests need python3 with pip)"),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for the child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                // The whole group: the Python process and its multiprocessing children.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(50)),
        }
    };
    let output = fs::read_to_string(log).unwrap_or_default();
    Finished { status, output }
}

/// Kills every process whose command line mentions `dir`: managers (and their clients) that
/// the suite started and a killed test could not stop. Linux only; elsewhere a no-op.
fn kill_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            eprintln!("killing leftover process {pid}");
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn pip_install_then_the_quick_start_runs() {
    let tmp = tempfile::Builder::new()
        .prefix("agora-pip-")
        .tempdir()
        .expect("create a temporary directory");
    let venv = Venv::create(tmp.path(), &[]);

    // The quick start the READMEs show is the file the test runs.
    let quick_start_file = client_dir().join("examples").join("quick_start.py");
    let quick_start = fs::read_to_string(&quick_start_file).expect("read the quick start");
    let client_readme =
        fs::read_to_string(client_dir().join("README.md")).expect("read client/python/README.md");
    assert_eq!(
        python_block_after(&client_readme, "## Quick start"),
        quick_start,
        "client/python/README.md's quick start differs from {}",
        quick_start_file.display()
    );
    let readme = fs::read_to_string(repo_dir().join("README.md")).expect("read README.md");
    for command in [
        "pip install ./client/python",
        "python3 client/python/examples/quick_start.py",
    ] {
        assert!(
            readme.lines().any(|l| l.trim() == command),
            "README.md no longer gives the command `{command}`"
        );
    }

    let mut run_it = venv.python();
    run_it.arg(&quick_start_file).current_dir(tmp.path());
    let ran = run(
        run_it,
        &tmp.path().join("quick_start.log"),
        QUICK_START_TIMEOUT,
    );
    kill_leftovers(tmp.path());
    assert!(
        ran.success(),
        "the quick start failed ({:?}):\n{}",
        ran.status,
        ran.output
    );
    assert_eq!(ran.output, "28\n", "the quick start printed something else");

    // The manager it ran is the one pip installed, and every version is the workspace's.
    let mut describe = venv.python();
    describe
        .args([
            "-c",
            "import importlib.metadata, agora, agora.manager\n\
             print(agora.manager.find_manager_binary())\n\
             print(agora.__version__)\n\
             print(importlib.metadata.version('agora'))\n\
             print(agora.__file__)",
        ])
        .current_dir(tmp.path());
    let described = run(
        describe,
        &tmp.path().join("describe.log"),
        QUICK_START_TIMEOUT,
    );
    assert!(described.success(), "{}", described.output);
    let lines: Vec<&str> = described.output.lines().collect();
    assert_eq!(lines.len(), 4, "unexpected output:\n{}", described.output);
    let venv_dir = venv.dir.canonicalize().expect("the venv exists");
    assert_eq!(
        Path::new(lines[0]),
        venv_dir.join("bin").join("agora-manager"),
        "agora.Manager() does not run the binary pip installed"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        lines[1], version,
        "agora.__version__ is not the crates' version"
    );
    assert_eq!(
        lines[2], version,
        "the distribution's version is not the crates'"
    );
    assert!(
        Path::new(lines[3])
            .canonicalize()
            .is_ok_and(|file| file.starts_with(&venv_dir)),
        "the quick start imported agora from {}, not from the venv",
        lines[3]
    );

    // Imported from the source tree instead, agora reads the version from Cargo.toml.
    let mut from_source = venv.python();
    from_source
        .args([
            "-c",
            "import agora; print(agora.__file__); print(agora.__version__)",
        ])
        .env("PYTHONPATH", client_dir())
        .current_dir(tmp.path());
    let described = run(
        from_source,
        &tmp.path().join("source.log"),
        QUICK_START_TIMEOUT,
    );
    assert!(described.success(), "{}", described.output);
    let source_init = client_dir().join("agora").join("__init__.py");
    assert_eq!(
        described.output,
        format!("{}\n{version}\n", source_init.display()),
        "agora imported from the source tree has another version than the crates'"
    );
}

#[test]
fn python_client_suite() {
    let tmp = tempfile::Builder::new()
        .prefix("agora-python-")
        .tempdir()
        .expect("create a temporary directory");
    let venv = Venv::create(tmp.path(), &["pytest>=7"]);

    let mut suite = venv.python();
    suite
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"])
        .arg(client_dir().join("tests"))
        .current_dir(tmp.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("AGORA_MANAGER_BIN", BIN)
        .env("TMPDIR", scratch(tmp.path()));
    let finished = run(suite, &tmp.path().join("suite.log"), SUITE_TIMEOUT);
    kill_leftovers(tmp.path());

    match finished.status {
        None => panic!(
            "the Python suite did not finish within {SUITE_TIMEOUT:?}:\n{}",
            finished.output
        ),
        Some(status) if !status.success() => {
            panic!("the Python suite failed ({status}):\n{}", finished.output)
        }
        Some(_) => {
            let summary = finished
                .output
                .lines()
                .rfind(|l| l.contains(" passed"))
                .unwrap_or("(no summary line)");
            println!("Python client suite: {summary}");
        }
    }
}
