//! The Python client's test suite (`client/python/tests`), run against this package's
//! `agora-manager` binary, so that `cargo test` covers it.
//!
//! Everything happens in a temporary directory: the package's files are copied there (so that
//! the build leaves nothing in the source tree, and nothing a previous build left there gets
//! into the package) and installed there with pip (`pip install --no-deps --target`, which
//! builds it in pip's default isolated environment), and `TMPDIR` points there too, so every
//! manager the suite starts keeps its socket inside it. Its one dependency, `msgpack`, comes
//! from the helper every Python-running test shares (`tests/common/python.rs`). The suite's output goes to files, never to pipes a stray child could hold
//! open, and whatever process still mentions the directory when the suite ends is killed: a
//! failing or hung test cannot leave managers behind.
//!
//! Needs `python3` with `pip`; fails (with pip's or Python's output) when either is missing or
//! when any Python test fails.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../../tests/common/python.rs"]
mod python;
use python::PythonDeps;

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// The whole suite takes well under a minute; this bounds a hang on a very loaded machine.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("client")
        .join("python")
}

/// Copies the files `pip install` needs (the project file, the README and the package).
fn copy_package(to: &Path) {
    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("create a directory of the package copy");
        for entry in fs::read_dir(from).expect("read the package directory") {
            let entry = entry.expect("read a package directory entry");
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            if entry.file_type().expect("stat a package file").is_dir() {
                if entry.file_name() != "__pycache__" {
                    copy_dir(&source, &target);
                }
            } else {
                fs::copy(&source, &target).expect("copy a package file");
            }
        }
    }
    let from = client_dir();
    fs::create_dir_all(to).expect("create the package copy");
    for file in ["pyproject.toml", "README.md"] {
        fs::copy(from.join(file), to.join(file)).expect("copy a package file");
    }
    copy_dir(&from.join("agora"), &to.join("agora"));
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
fn python_client_suite() {
    let deps = PythonDeps::ensure();
    let tmp = tempfile::Builder::new()
        .prefix("agora-python-")
        .tempdir()
        .expect("create a temporary directory");
    let site = tmp.path().join("site");
    let scratch = tmp.path().join("tmp");
    fs::create_dir(&scratch).expect("create the scratch directory");

    let package = tmp.path().join("package");
    copy_package(&package);
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-input",
        "--no-deps",
        "--target",
    ])
    .arg(&site)
    .arg(&package)
    .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    .env("TMPDIR", &scratch);
    let installed = run(pip, &tmp.path().join("pip.log"), PIP_TIMEOUT);
    assert!(
        installed.success(),
        "`pip install ./client/python` failed ({:?}):\n{}",
        installed.status,
        installed.output
    );

    let mut suite = Command::new("python3");
    suite
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(client_dir().join("tests"))
        .current_dir(tmp.path())
        .env("PYTHONPATH", deps.python_path(&[&site]))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("AGORA_MANAGER_BIN", BIN)
        .env("TMPDIR", &scratch)
        .env_remove("AGORA_ADDRESS")
        .env_remove("AGORA_AUTHKEY");
    let finished = run(suite, &tmp.path().join("suite.log"), SUITE_TIMEOUT);
    kill_leftovers(tmp.path());

    // Proof that the suite ran the installed package, not the source tree.
    assert!(
        site.join("agora").join("__init__.py").is_file(),
        "pip did not install the agora package into {}",
        site.display()
    );
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
                .filter(|l| l.starts_with("Ran ") || *l == "OK" || l.starts_with("OK "))
                .collect::<Vec<_>>()
                .join("; ");
            println!("Python client suite: {summary}");
        }
    }
}
