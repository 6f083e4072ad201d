//! The `agora-manager` binary run as its own process, for the tests that need what only a real
//! process shows: its resident memory, its log, its command-line checks. Shared by
//! `memory.rs`, `delete_frees.rs` and `connection_limits.rs` (each includes it as a module).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use agora_proto::testing::RawClient;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// The authkey every such manager is started with, as hex (`AGORA_AUTHKEY`).
pub const KEY_HEX: &str = "7265616c2062696e6172792074657374206b65792c203332206279746573212e";

/// How long a test waits for the manager to listen or to log a line.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The authkey as bytes.
pub fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).expect("hex")
}

/// A manager process on a Unix socket in its own directory, its log in a file there; killed and
/// reaped when dropped, however the test ends.
pub struct ManagerProcess {
    child: Child,
    dir: tempfile::TempDir,
    /// Where the ready line comes from (nothing else is written there).
    stdout: Option<ChildStdout>,
}

impl ManagerProcess {
    /// Starts the binary with these extra arguments and waits until it accepts connections.
    pub fn start(args: &[&str]) -> ManagerProcess {
        ManagerProcess::start_with_env(args, &[])
    }

    /// As [`ManagerProcess::start`], with these environment variables set too.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ManagerProcess {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("manager.sock");
        let stderr = fs::File::create(dir.path().join("stderr.log")).expect("a log file");
        let mut child = Command::new(BIN)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(args)
            .env("AGORA_AUTHKEY", KEY_HEX)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start agora-manager");
        let stdout = child.stdout.take();
        let m = ManagerProcess { child, dir, stdout };
        let deadline = Instant::now() + TIMEOUT;
        while UnixStream::connect(m.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "the manager did not start listening:\n{}",
                m.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
        m
    }

    /// The ready line the manager printed (`PROTOCOL.md`, section 6), read once.
    pub fn ready_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut stdout = self.stdout.take().expect("the ready line is read once");
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") && stdout.read(&mut byte).expect("read stdout") == 1 {
            line.push(byte[0]);
        }
        String::from_utf8(line)
            .expect("UTF-8")
            .trim_end()
            .to_owned()
    }

    /// The address of the listener whose scheme is `scheme` (`"tcp"`, say), from the ready
    /// line.
    pub fn address(&mut self, scheme: &str) -> String {
        let line = self.ready_line();
        let prefix = format!("{scheme}:");
        line.split(' ')
            .find(|w| w.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {scheme}: address in {line:?}"))
            .to_owned()
    }

    /// Waits up to the timeout for the process to exit by itself; gives its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the manager did not exit:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, to read its memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The manager's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("manager.sock")
    }

    /// A fresh, unauthenticated connection.
    pub fn connect(&self) -> RawClient {
        RawClient::connect_unix(&self.socket()).expect("connect")
    }

    /// An authenticated connection.
    pub fn client(&self) -> RawClient {
        let mut c = self.connect();
        c.authenticate(&key());
        c
    }

    /// What the manager has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits until the log holds `text` (written by another process, a moment later).
    pub fn expect_log(&self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the log never said {text:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The resident memory of the manager process, in bytes.
    pub fn rss(&self) -> u64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
