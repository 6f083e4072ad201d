//! The exec start method: the manager runs in a fresh execution of a program (by default the
//! current one) that calls [`run_manager_if_requested`] first thing in `main`.
//!
//! The parent binds the sockets and makes the lifeline as for fork, then starts the program
//! with those descriptors left open across `exec` and a description of them in
//! [`ROLE_ENV`]. The new process inherits nothing else of the parent (every other descriptor
//! is close-on-exec, no thread or lock state crosses `exec`), which is what makes this method
//! safe from programs that already run threads.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agora_manager::store::StoreSpec;
use agora_manager::{Config, Listener};
use agora_proto::Limits;

use super::SOCKET_NAME;
use crate::fork;

/// The environment variable that tells a process it was started to be a manager, and with
/// which descriptors and settings. Its format is private to this crate.
pub const ROLE_ENV: &str = "AGORA_MANAGER_ROLE";

/// Where the exec start method finds its program.
#[derive(Debug, Clone)]
pub(crate) struct ExecSpec {
    /// `None`: the current executable.
    pub(crate) program: Option<PathBuf>,
    pub(crate) args: Vec<OsString>,
}

/// What the parent hands the manager process.
struct Role {
    unix: RawFd,
    tcp: Vec<RawFd>,
    lifeline: RawFd,
    authkey: Vec<u8>,
    /// The admin authkey; `None` (a role without the field): none.
    admin_key: Option<Vec<u8>>,
    limits: Limits,
    max_in_flight: usize,
    /// How long a handoff waits; `None` (a role without the field): the default.
    handoff: Option<Duration>,
    /// The polling budget; `None` (a role without the field): this process's own.
    spin: Option<Duration>,
    /// Where the objects live (a role without the field: memory).
    store: StoreSpec,
    dir: PathBuf,
}

impl Role {
    /// `unix=3;tcp=5,6;lifeline=4;key=HEX;limits=A,B,C;in_flight=N;handoff_ms=N;spin_ns=N;
    /// admin_key=HEX;store=SPEC;store_lease_ms=N;dir=PATH` (the directory last: it is the only field that may contain any
    /// character).
    fn encode(&self) -> String {
        let tcp: Vec<String> = self.tcp.iter().map(|fd| fd.to_string()).collect();
        let spin = match self.spin {
            Some(budget) => format!("spin_ns={};", budget.as_nanos()),
            None => String::new(),
        };
        let handoff = match self.handoff {
            Some(lease) => format!("handoff_ms={};", lease.as_millis()),
            None => String::new(),
        };
        let admin = match &self.admin_key {
            Some(key) => format!("admin_key={};", hex::encode(key)),
            None => String::new(),
        };
        // A store spec holds no `;` (its prefix's characters are restricted).
        let store = match &self.store {
            StoreSpec::Memory => String::new(),
            StoreSpec::Etcd(spec) => format!(
                "store={};store_lease_ms={};",
                self.store,
                spec.lease_ttl.as_millis()
            ),
        };
        format!(
            "unix={};tcp={};lifeline={};key={};limits={},{},{};in_flight={};{handoff}{spin}{admin}\
             {store}dir={}",
            self.unix,
            tcp.join(","),
            self.lifeline,
            hex::encode(&self.authkey),
            self.limits.max_message_bytes,
            self.limits.max_depth,
            self.limits.max_container_len,
            self.max_in_flight,
            self.dir.display(),
        )
    }

    fn decode(text: &str) -> Result<Role, String> {
        let (fields, dir) = text.split_once(";dir=").ok_or("no dir field".to_owned())?;
        let mut role = Role {
            unix: -1,
            tcp: Vec::new(),
            lifeline: -1,
            authkey: Vec::new(),
            admin_key: None,
            limits: Limits::default(),
            max_in_flight: 0,
            handoff: None,
            spin: None,
            store: StoreSpec::Memory,
            dir: PathBuf::from(dir),
        };
        let number = |value: &str| -> Result<usize, String> {
            value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))
        };
        let fd = |value: &str| -> Result<RawFd, String> {
            value
                .parse()
                .map_err(|_| format!("{value:?} is not a descriptor"))
        };
        for field in fields.split(';') {
            let (key, value) = field
                .split_once('=')
                .ok_or(format!("field {field:?} has no value"))?;
            match key {
                "unix" => role.unix = fd(value)?,
                "lifeline" => role.lifeline = fd(value)?,
                "tcp" if value.is_empty() => {}
                "tcp" => role.tcp = value.split(',').map(fd).collect::<Result<_, _>>()?,
                "key" => role.authkey = hex::decode(value).map_err(|e| format!("key: {e}"))?,
                "admin_key" => {
                    let key = hex::decode(value).map_err(|e| format!("admin_key: {e}"))?;
                    role.admin_key = Some(key);
                }
                "limits" => {
                    let limits: Vec<usize> =
                        value.split(',').map(number).collect::<Result<_, _>>()?;
                    let [bytes, depth, len] = limits[..] else {
                        return Err("limits needs three numbers".to_owned());
                    };
                    role.limits = Limits {
                        max_message_bytes: bytes,
                        max_depth: depth,
                        max_container_len: len,
                    };
                }
                "in_flight" => role.max_in_flight = number(value)?,
                "handoff_ms" => {
                    let millis: u64 = value
                        .parse()
                        .map_err(|_| format!("handoff_ms: {value:?} is not a number"))?;
                    role.handoff = Some(Duration::from_millis(millis));
                }
                "spin_ns" => {
                    let nanos: u64 = value
                        .parse()
                        .map_err(|_| format!("spin_ns: {value:?} is not a number"))?;
                    role.spin = Some(Duration::from_nanos(nanos));
                }
                "store" => role.store = value.parse().map_err(|e| format!("store: {e}"))?,
                "store_lease_ms" => {
                    let millis: u64 = value
                        .parse()
                        .map_err(|_| format!("store_lease_ms: {value:?} is not a number"))?;
                    if let StoreSpec::Etcd(spec) = &mut role.store {
                        spec.lease_ttl = Duration::from_millis(millis);
                    }
                }
                other => return Err(format!("unknown field {other:?}")),
            }
        }
        if role.unix < 3 || role.lifeline < 3 || role.authkey.is_empty() {
            return Err("missing socket, lifeline or authkey".to_owned());
        }
        Ok(role)
    }
}

/// True when this process was started as a manager but is about to start another one: its
/// `main` did not call [`run_manager_if_requested`] first. Starting one would repeat forever.
pub(crate) fn is_unhandled_role() -> bool {
    std::env::var_os(ROLE_ENV).is_some()
}

/// Starts `spec`'s program as the manager, with `unix`, `tcp` and `lifeline` open across
/// `exec`. Returns its pid; the caller waits for it with `waitpid`.
pub(crate) fn launch(
    spec: &ExecSpec,
    unix: &OwnedFd,
    tcp: &[OwnedFd],
    lifeline: &OwnedFd,
    config: &Config,
    dir: &Path,
) -> io::Result<libc::pid_t> {
    let mut command = match &spec.program {
        Some(program) => Command::new(program),
        None => current_program()?,
    };
    let role = Role {
        unix: unix.as_raw_fd(),
        tcp: tcp.iter().map(AsRawFd::as_raw_fd).collect(),
        lifeline: lifeline.as_raw_fd(),
        authkey: config.authkey.clone(),
        admin_key: config.admin_authkey.clone(),
        limits: config.limits,
        max_in_flight: config.max_in_flight,
        handoff: Some(config.handoff_lease),
        spin: Some(config.spin.budget),
        store: config.store.clone(),
        dir: dir.to_owned(),
    };
    let inherit: Vec<RawFd> = std::iter::once(role.unix)
        .chain(role.tcp.iter().copied())
        .chain(std::iter::once(role.lifeline))
        .collect();
    command
        .args(&spec.args)
        .env(ROLE_ENV, role.encode())
        .stdin(Stdio::null())
        // As for fork: never write into the program's output; standard error stays.
        .stdout(Stdio::null())
        // Its own process group: a Ctrl-C meant for the program must not stop the manager.
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls fcntl, which is
    // async-signal-safe; it allocates nothing (`inherit` was built before).
    unsafe {
        command.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The pid is all we keep: the caller reaps it with waitpid, and dropping a std Child
    // neither waits nor kills.
    Ok(child.id() as libc::pid_t)
}

/// A command for the program this process runs. Through `/proc/self/exe` where it exists, so
/// that the very same executable runs even if its file was replaced or deleted since (a
/// rebuild while the program runs), with the usual name as `argv[0]`.
fn current_program() -> io::Result<Command> {
    let path = std::env::current_exe()?;
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        let mut command = Command::new(proc_exe);
        command.arg0(path);
        Ok(command)
    } else {
        Ok(Command::new(path))
    }
}

/// Runs the manager and exits, if this process was started as one by a [`Manager`] built with
/// [`reexec`](super::ManagerBuilder::reexec) or [`exec`](super::ManagerBuilder::exec);
/// otherwise returns at once and does nothing.
///
/// Call it first thing in `main`, before anything else happens (above all before starting a
/// runtime or threads, parsing arguments or printing), in every program that may be started
/// that way, as Python's `spawn` start method needs its `if __name__ == "__main__":` guard.
/// Forgetting it makes [`ManagerBuilder::spawn`](super::ManagerBuilder::spawn) fail in the
/// parent with [`SpawnError::ManagerExited`](super::SpawnError::ManagerExited) or
/// [`SpawnError::InvalidConfig`](super::SpawnError::InvalidConfig), never start managers in
/// a loop.
///
/// [`Manager`]: super::Manager
pub fn run_manager_if_requested() {
    let Some(text) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let role = match text
        .to_str()
        .ok_or("not UTF-8".to_owned())
        .and_then(Role::decode)
    {
        Ok(role) => role,
        Err(e) => {
            fork::write_stderr(&format!("agora: bad {ROLE_ENV}: {e}\n"));
            std::process::exit(2);
        }
    };
    // Workers this manager process would start (none, normally) must not see the role.
    // SAFETY (edition 2024 wording): called first thing in `main`, before threads exist.
    std::env::remove_var(ROLE_ENV);
    let code = match serve(role) {
        Ok(()) => 0,
        Err(e) => {
            fork::write_stderr(&format!("agora: the manager failed: {e}\n"));
            1
        }
    };
    std::process::exit(code);
}

/// Runs the manager described by `role` until it stops, then removes its directory.
fn serve(role: Role) -> io::Result<()> {
    // SAFETY: the parent left these descriptors open for this process and nothing else in it
    // knows them; each is taken once.
    let (unix, tcp, lifeline) = unsafe {
        (
            OwnedFd::from_raw_fd(role.unix),
            role.tcp
                .iter()
                .map(|&fd| OwnedFd::from_raw_fd(fd))
                .collect::<Vec<_>>(),
            OwnedFd::from_raw_fd(role.lifeline),
        )
    };
    // Close-on-exec again, so that programs the manager might start do not inherit them.
    for fd in std::iter::once(&unix)
        .chain(&tcp)
        .chain(std::iter::once(&lifeline))
    {
        // SAFETY: F_SETFD on a descriptor this process owns.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(fork::last_error());
        }
    }
    let mut listeners = vec![Listener::Unix {
        listener: UnixListener::from(unix),
        path: role.dir.join(SOCKET_NAME),
    }];
    listeners.extend(
        tcp.into_iter()
            .map(|fd| Listener::Tcp(std::net::TcpListener::from(fd))),
    );
    let mut config = Config::new(role.authkey);
    config.admin_authkey = role.admin_key;
    config.limits = role.limits;
    config.max_in_flight = role.max_in_flight;
    if let Some(lease) = role.handoff {
        config.handoff_lease = lease;
    }
    config.spin.budget = role.spin.unwrap_or_else(agora_client::spin_budget);
    config.store = role.store;
    // A fresh thread, in case `main` was entered inside a runtime (`#[tokio::main]`).
    let result = std::thread::Builder::new()
        .name("agora-manager".into())
        .spawn(move || agora_manager::run_blocking(listeners, config, Some(lifeline)))?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the manager thread panicked")));
    // The parent may be gone and unable to remove it.
    let _ = std::fs::remove_dir_all(&role.dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips() {
        let role = Role {
            unix: 7,
            tcp: vec![8, 9],
            lifeline: 10,
            authkey: vec![1, 2, 0xff],
            admin_key: Some(vec![3, 4]),
            limits: Limits {
                max_message_bytes: 1,
                max_depth: 2,
                max_container_len: 3,
            },
            max_in_flight: 4,
            handoff: Some(Duration::from_millis(1500)),
            spin: Some(Duration::from_micros(30)),
            store: "etcd://127.0.0.1:2379,h:2380/jobs/a".parse().unwrap(),
            dir: PathBuf::from("/tmp/odd;dir=name"),
        };
        let back = Role::decode(&role.encode()).unwrap();
        assert_eq!(
            (back.unix, back.tcp.clone(), back.lifeline),
            (7, vec![8, 9], 10)
        );
        assert_eq!(back.authkey, vec![1, 2, 0xff]);
        assert_eq!(back.admin_key, Some(vec![3, 4]));
        assert_eq!(back.limits.max_container_len, 3);
        assert_eq!(back.max_in_flight, 4);
        assert_eq!(back.handoff, Some(Duration::from_millis(1500)));
        assert_eq!(back.spin, Some(Duration::from_micros(30)));
        assert_eq!(back.store, role.store);
        let ttl = Duration::from_millis(2500);
        let leased = Role {
            store: match role.store.clone() {
                StoreSpec::Etcd(spec) => StoreSpec::Etcd(agora_manager::store::EtcdSpec {
                    lease_ttl: ttl,
                    ..spec
                }),
                memory => memory,
            },
            ..Role::decode(&role.encode()).unwrap()
        };
        match Role::decode(&leased.encode()).unwrap().store {
            StoreSpec::Etcd(spec) => assert_eq!(spec.lease_ttl, ttl),
            StoreSpec::Memory => panic!("the etcd store was lost"),
        }
        // A role written without the field leaves the budget to the manager process.
        assert_eq!(
            Role::decode("unix=3;lifeline=4;key=00;dir=/d")
                .unwrap()
                .spin,
            None
        );
        assert_eq!(back.dir, PathBuf::from("/tmp/odd;dir=name"));
        let off = Role {
            spin: Some(Duration::ZERO),
            ..back
        };
        assert_eq!(
            Role::decode(&off.encode()).unwrap().spin,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_bad_role_is_refused() {
        assert!(Role::decode("unix=3;lifeline=4").is_err());
        assert!(Role::decode("unix=x;lifeline=4;key=00;dir=/d").is_err());
        assert!(Role::decode("lifeline=4;key=00;dir=/d").is_err());
        assert!(Role::decode("unix=3;lifeline=4;key=00;spin_ns=-1;dir=/d").is_err());
    }
}
