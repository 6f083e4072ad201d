//! Makes the Python side's third-party dependencies importable, for every test that runs Python.
//!
//! Used by `tests/cross_language.rs`, which imports the Python client from the source tree. (The
//! Python package's own tests, `manager/tests/python.rs`, install it with pip in fresh venvs,
//! which brings its dependencies along.)
//!
//! The only dependency is `msgpack`. When the `python3` on `PATH` already imports it, nothing is
//! installed. Otherwise it is installed with `pip install --target` into a directory under
//! `CARGO_TARGET_TMPDIR`, one per interpreter ABI, and the tests put that directory on
//! `PYTHONPATH`. Many tests of many test binaries may ask at once, so the install is:
//! - serialised across threads and processes by an exclusive `flock` on a lock file beside the
//!   directory (a lock the kernel drops when its holder dies, so a killed test never wedges the
//!   next one);
//! - done into a fresh staging directory that is renamed into place only after the package
//!   imports from it, so no test ever sees a half-installed directory, and a directory left
//!   broken by an interrupted run is replaced rather than trusted.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages the Python side imports, beyond the standard library.
const PACKAGES: &[&str] = &["msgpack"];

/// Where Python finds its dependencies: the entries a test adds to `PYTHONPATH`.
pub struct PythonDeps {
    /// Empty when the interpreter imports everything already.
    dir: Option<PathBuf>,
}

impl PythonDeps {
    /// Makes the dependencies importable (installing them once if needed) and says where.
    ///
    /// Panics with pip's or Python's output when that cannot be done: the test cannot run.
    pub fn ensure() -> PythonDeps {
        let probe = interpreter_probe();
        if probe.imports_all {
            return PythonDeps { dir: None };
        }
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pydeps");
        fs::create_dir_all(&root).expect("create the Python dependency root");
        let dir = root.join(&probe.abi);
        let _lock = FileLock::exclusive(&root.join(format!("{}.lock", probe.abi)));
        if !imports_from(&dir) {
            install_into(&root, &dir);
        }
        PythonDeps { dir: Some(dir) }
    }

    /// A `PYTHONPATH` value: `first` (if any) followed by the dependency directory (if any).
    pub fn python_path(&self, first: &[&Path]) -> String {
        let entries = first.iter().copied().chain(self.dir.as_deref());
        let parts: Vec<String> = entries.map(|p| p.display().to_string()).collect();
        parts.join(":")
    }
}

/// What the `python3` on `PATH` is, and whether it has the packages already.
struct Probe {
    /// `sys.implementation.cache_tag` plus the platform: installs are kept apart per ABI, so a
    /// venv of another Python version never picks up a compiled module built for this one.
    abi: String,
    imports_all: bool,
}

fn interpreter_probe() -> Probe {
    let script = format!(
        "import sys, sysconfig, importlib.util\n\
         print(sys.implementation.cache_tag + '-' + sysconfig.get_platform())\n\
         print(all(importlib.util.find_spec(p) for p in {PACKAGES:?}))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .env_remove("PYTHONPATH")
        .output()
        .expect("python3 must be installed to run the tests that speak to Python");
    assert!(
        out.status.success(),
        "python3 failed to describe itself:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let abi = lines.next().unwrap_or("unknown").trim().replace('/', "_");
    let imports_all = lines.next().map(str::trim) == Some("True");
    Probe { abi, imports_all }
}

/// True when every package imports with `dir` on `PYTHONPATH` (false when it does not exist).
fn imports_from(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let script = format!("import {}", PACKAGES.join(", "));
    Command::new("python3")
        .args(["-c", &script])
        .env("PYTHONPATH", dir)
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the packages into a staging directory under `root`, then renames it to `dir`.
/// The caller holds the lock, so nobody else is installing or renaming.
fn install_into(root: &Path, dir: &Path) {
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(root)
        .expect("create a staging directory for pip");
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-input", "--target"])
        .arg(staging.path())
        .args(PACKAGES)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env_remove("PYTHONPATH")
        .output()
        .expect("run python3 -m pip (the tests that speak to Python need pip)");
    assert!(
        out.status.success(),
        "pip install {PACKAGES:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        imports_from(staging.path()),
        "pip installed {PACKAGES:?} into {}, but Python cannot import them from there",
        staging.path().display()
    );
    if dir.exists() {
        // Left broken by an interrupted run (it did not import): replace it.
        fs::remove_dir_all(dir).expect("remove a broken Python dependency directory");
    }
    let staged = staging.keep();
    fs::rename(&staged, dir).expect("move the installed Python dependencies into place");
}

/// An exclusive `flock` on a file, held until dropped (or until the process dies).
struct FileLock(File);

impl FileLock {
    fn exclusive(path: &Path) -> FileLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("open the Python dependency lock file");
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return FileLock(file);
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

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as above. Closing the file would release it too; this says so explicitly.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
