//! `Manager::spawn` and `Process` with real processes.
//!
//! Scenarios that need a process to die by `SIGKILL`, or a worker that is a separate program,
//! re-execute this test binary in a *role*: `AGORA_TEST_ROLE` names it, and the `child_role`
//! test performs it (and does nothing in a normal run).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora::{Address, Client, Manager, Process, SpawnError};
use common::{adopt_orphans, running, serial};

mod common;

const ROLE: &str = "AGORA_TEST_ROLE";

/// Reaps `pid` if it is an exited child of this process (an adopted orphan, say).
fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: a valid out-pointer; WNOHANG never blocks.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
}

/// Waits up to `timeout` for `pid` to stop running, reaping it if it is an adopted orphan.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !running(pid) {
            reap(pid);
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !running(pid)
}

fn socket_path(manager: &Manager) -> PathBuf {
    match manager.address() {
        Address::Unix(path) => path.clone(),
        other => panic!("expected a Unix address, got {other}"),
    }
}

/// Runs this test binary in `role`, with stdout piped.
fn role_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command.args(CHILD_ROLE_ARGS).env(ROLE, role);
    command
}

/// Reads the child's stdout until a line containing `prefix`, and returns the words after it.
fn read_announcement(child: &mut Child, prefix: &str) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("child stdout");
        // libtest may print "test child_role ... " first on the same line.
        if let Some(at) = line.find(prefix) {
            let rest = &line[at + prefix.len()..];
            return rest.split_whitespace().map(str::to_owned).collect();
        }
    }
    panic!("the child ended without printing {prefix:?}");
}

/// The arguments that make this test binary run `child_role` alone.
const CHILD_ROLE_ARGS: [&str; 4] = ["--exact", "child_role", "--nocapture", "--test-threads=1"];

/// A builder for the exec start method, re-executing this test binary into `child_role`.
fn exec_builder() -> agora::ManagerBuilder {
    Manager::builder().exec(None, CHILD_ROLE_ARGS)
}

/// The roles; a normal test run passes straight through.
#[test]
fn child_role() {
    // A manager started with the exec start method runs here and exits.
    agora::run_manager_if_requested();
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        // Spawn a manager, say where it is, and wait to be killed.
        "owner" => {
            let manager = Manager::spawn().expect("spawn");
            let dir = socket_path(&manager).parent().unwrap().to_owned();
            println!("ANNOUNCE {} {}", manager.pid(), dir.display());
            std::thread::sleep(Duration::from_secs(60));
        }
        // As "owner", with the exec start method.
        "owner-exec" => {
            let manager = exec_builder().spawn().expect("spawn");
            let dir = socket_path(&manager).parent().unwrap().to_owned();
            println!("ANNOUNCE {} {}", manager.pid(), dir.display());
            std::thread::sleep(Duration::from_secs(60));
        }
        // A program with a tokio runtime that has installed signal handlers: the exec start
        // method works there, and so does the fork start method.
        "tokio-program" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let _signal =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                        .expect("signal");
            });
            let manager = exec_builder().spawn().expect("spawn with exec");
            let dict = manager.dict::<String, i64>().expect("dict");
            dict.set("k", &5).expect("set");
            assert_eq!(dict.get("k").expect("get"), Some(5));
            let pid = manager.pid();
            let dir = socket_path(&manager).parent().unwrap().to_owned();
            let status = manager.shutdown().expect("shutdown");
            assert!(status.success(), "{status}");
            assert!(!running(pid) && !dir.exists());
            let fork = Manager::spawn().map(drop).map_err(|e| e.to_string());
            println!("ANNOUNCE exec-ok fork-result={}", fork.is_ok());
            std::process::exit(0);
        }
        // `Manager::spawn` (the fork start method) from inside `#[tokio::main]`, each flavour.
        "tokio-main-current-thread" => spawn_in_current_thread_runtime(),
        "tokio-main-multi-thread" => spawn_in_multi_thread_runtime(),
        // A process that was started as a manager but did not run the hook must refuse to
        // start another manager with exec (which would repeat forever).
        "unhandled" => {
            std::env::set_var(agora::manager::ROLE_ENV, "anything");
            match exec_builder().spawn() {
                Err(SpawnError::InvalidConfig(_)) => std::process::exit(0),
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
        }
        // As "owner", plus a forked worker that outlives the owner.
        "owner-with-worker" => {
            let manager = Manager::spawn().expect("spawn");
            let worker = Process::spawn(|| std::thread::sleep(Duration::from_secs(60)))
                .expect("spawn worker");
            println!("ANNOUNCE {} {}", manager.pid(), worker.pid());
            std::thread::sleep(Duration::from_secs(60));
        }
        // As "owner", plus forked workers blocked in a queue get.
        "owner-with-blocked-workers" => {
            let manager = Manager::spawn().expect("spawn");
            let jobs = manager.queue::<u64>(0).expect("queue");
            let mut pids = Vec::new();
            for _ in 0..3 {
                let jobs = jobs.clone();
                let worker = Process::spawn(move || {
                    // Returns when the manager goes: the connection closes under the get.
                    let _ = jobs.get();
                })
                .expect("spawn worker");
                pids.push(worker.pid().to_string());
            }
            // Time for every worker to park in its get.
            std::thread::sleep(Duration::from_millis(300));
            println!("ANNOUNCE {} {}", manager.pid(), pids.join(" "));
            std::thread::sleep(Duration::from_secs(60));
        }
        // As "owner-with-blocked-workers", with workers made by a raw fork(2).
        "owner-with-raw-forked-workers" => {
            let manager = Manager::spawn().expect("spawn");
            let jobs = manager.queue::<u64>(0).expect("queue");
            let mut pids = Vec::new();
            for _ in 0..3 {
                // SAFETY: this role's process runs no other thread; the child only calls the
                // client and exits without unwinding.
                let pid = unsafe { libc::fork() };
                assert!(pid >= 0, "fork failed");
                if pid == 0 {
                    let _ = jobs.get();
                    // SAFETY: plain _exit.
                    unsafe { libc::_exit(0) };
                }
                pids.push(pid.to_string());
            }
            std::thread::sleep(Duration::from_millis(300));
            println!("ANNOUNCE {} {}", manager.pid(), pids.join(" "));
            std::thread::sleep(Duration::from_secs(60));
        }
        // Forks a worker while another thread runs, with no tracing subscriber.
        "threaded-fork" => {
            let _busy = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(5)));
            let mut worker = Process::spawn(|| {}).expect("spawn worker");
            worker.join().expect("join");
            // As a `main` returning `Result` would print it.
            let e = SpawnError::NotReady(Duration::from_secs(1));
            println!("ANNOUNCE {e:?}");
            std::process::exit(0);
        }
        // Run with AGORA_SPIN_US set: report the budget this process polls with and the one
        // each manager was started with (fork, exec, and an explicit one), in nanoseconds.
        "spin-budget" => {
            let forked = Manager::spawn().expect("spawn");
            let execed = exec_builder().spawn().expect("spawn with exec");
            let chosen = Manager::builder()
                .spin_budget(Duration::from_micros(20))
                .spawn()
                .expect("spawn with a budget");
            for manager in [&forked, &execed, &chosen] {
                let list = manager.list::<u64>().expect("list");
                list.extend(0..100u64).expect("extend");
                assert_eq!(list.len().expect("len"), 100);
            }
            println!(
                "ANNOUNCE {} {} {} {}",
                agora::spin_budget().as_nanos(),
                forked.spin_budget().as_nanos(),
                execed.spin_budget().as_nanos(),
                chosen.spin_budget().as_nanos(),
            );
            std::process::exit(0);
        }
        // A worker program: write into the dict the parent named, through the environment.
        "env-writer" => {
            let client = Client::from_env().expect("Client::from_env");
            let dict = client
                .dict_named::<String, String>("from-worker")
                .expect("dict_named");
            dict.set("greeting", &"hello from a program".to_owned())
                .expect("set");
            std::process::exit(0);
        }
        other => panic!("unknown role {other:?}"),
    }
}

#[test]
fn spawn_makes_a_private_socket_and_drop_stops_the_manager() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn");
    let pid = manager.pid();
    let path = socket_path(&manager);
    let dir = path.parent().unwrap().to_owned();
    assert!(running(pid), "the manager runs");
    assert_eq!(manager.authkey().len(), 32);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the directory is private");
    assert_eq!(mode(&path), 0o600, "the socket is private");

    let dict = manager.dict::<String, i64>().expect("dict");
    dict.set("a", &1).expect("set");
    assert_eq!(dict.get("a").expect("get"), Some(1));

    let started = Instant::now();
    drop(manager);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "an orderly stop is quick, took {:?}",
        started.elapsed()
    );
    assert!(!running(pid), "the manager is gone after drop");
    assert!(!dir.exists(), "the private directory is removed");
}

#[test]
fn shutdown_reports_a_clean_exit() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn");
    let pid = manager.pid();
    let status = manager.shutdown().expect("shutdown");
    assert!(status.success(), "orderly exit, got {status}");
    assert!(!running(pid));
}

#[test]
fn the_manager_child_holds_only_its_own_pipe_and_no_stdin_or_stdout() {
    let _serial = serial();
    let first = Manager::spawn().expect("spawn");
    let second = Manager::spawn().expect("spawn");
    for manager in [&first, &second] {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", manager.pid())).unwrap();
        let mut pipes = 0;
        for entry in fds {
            let entry = entry.unwrap();
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if entry.file_name() == "0" || entry.file_name() == "1" {
                assert_eq!(
                    target,
                    Path::new("/dev/null"),
                    "stdin and stdout are /dev/null"
                );
            }
            let fd: u32 = entry.file_name().to_string_lossy().parse().unwrap();
            // Standard output and error are whatever the test runs with, pipes maybe.
            if fd > 2 && target.to_string_lossy().starts_with("pipe:") {
                pipes += 1;
            }
        }
        // Its lifeline's read end, and no copy of the other manager's write end.
        assert_eq!(pipes, 1, "manager {} holds {pipes} pipes", manager.pid());
    }
}

#[test]
fn the_manager_exits_when_its_owner_is_killed() {
    manager_exits_when_owner_is_killed("owner");
}

#[test]
fn an_exec_manager_exits_when_its_owner_is_killed() {
    manager_exits_when_owner_is_killed("owner-exec");
}

fn manager_exits_when_owner_is_killed(role: &str) {
    let _serial = serial();
    adopt_orphans();
    let mut owner = role_command(role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the owner");
    let words = read_announcement(&mut owner, "ANNOUNCE ");
    let manager_pid: u32 = words[0].parse().unwrap();
    let dir = PathBuf::from(&words[1]);
    assert!(running(manager_pid));

    owner.kill().expect("SIGKILL the owner");
    let status = owner.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));

    assert!(
        wait_gone(manager_pid, Duration::from_secs(5)),
        "the orphaned manager {manager_pid} still runs"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.exists(), "the orphaned manager removed its directory");
}

#[test]
fn a_forked_worker_does_not_keep_the_manager_alive() {
    let _serial = serial();
    adopt_orphans();
    let mut owner = role_command("owner-with-worker")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the owner");
    let words = read_announcement(&mut owner, "ANNOUNCE ");
    let manager_pid: u32 = words[0].parse().unwrap();
    let worker_pid: u32 = words[1].parse().unwrap();

    owner.kill().expect("SIGKILL the owner");
    owner.wait().unwrap();
    let manager_gone = wait_gone(manager_pid, Duration::from_secs(5));
    let worker_running = running(worker_pid);
    // The worker is an orphan now, adopted by this process.
    // SAFETY: plain kill.
    unsafe { libc::kill(worker_pid as libc::pid_t, libc::SIGKILL) };
    wait_gone(worker_pid, Duration::from_secs(5));
    assert!(worker_running, "the worker was still running");
    assert!(
        manager_gone,
        "the manager outlived its owner because of a worker"
    );
}

/// The owner is SIGKILLed while its forked workers wait in a queue get: the manager and the
/// workers are gone within a second, 20 times out of 20.
#[test]
fn a_killed_owner_takes_the_manager_and_its_blocked_workers_along() {
    killed_owner_takes_everything_along("owner-with-blocked-workers");
}

/// The same with workers made by a raw `fork`, which the crate does not see: they let go of
/// the lifeline all the same.
#[test]
fn a_killed_owner_takes_the_manager_and_its_raw_forked_workers_along() {
    killed_owner_takes_everything_along("owner-with-raw-forked-workers");
}

fn killed_owner_takes_everything_along(role: &str) {
    let _serial = serial();
    adopt_orphans();
    for run in 0..20 {
        let mut owner = role_command(role)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the owner");
        let words = read_announcement(&mut owner, "ANNOUNCE ");
        let pids: Vec<u32> = words.iter().map(|w| w.parse().unwrap()).collect();
        owner.kill().expect("SIGKILL the owner");
        owner.wait().unwrap();
        let killed = Instant::now();
        let lingering: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&pid| !wait_gone(pid, Duration::from_secs(1).saturating_sub(killed.elapsed())))
            .collect();
        for &pid in &lingering {
            common::kill_pid(pid);
        }
        assert!(
            lingering.is_empty(),
            "run {run}: {lingering:?} of {pids:?} (the manager first) outlived the owner by a second"
        );
    }
}

/// The warning about forking a threaded program reaches stderr without a tracing subscriber,
/// and a spawn error's `Debug` is its advice.
#[test]
fn warnings_and_errors_reach_the_user_without_a_subscriber() {
    let _serial = serial();
    let out = role_command("threaded-fork")
        .output()
        .expect("run the role");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agora: warning: Process::spawn forks a program that already runs"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ANNOUNCE the manager process did not answer within 1s"),
        "{stdout}"
    );
}

#[test]
fn forked_workers_report_their_exit_codes() {
    let _serial = serial();
    let code = |mut p: Process| p.join().expect("join");

    let status = code(Process::spawn(|| {}).expect("spawn"));
    assert_eq!(status.code(), Some(0));

    let status = code(Process::spawn(|| std::process::exit(3)).expect("spawn"));
    assert_eq!(status.code(), Some(3));

    let status = code(Process::spawn(|| panic!("on purpose")).expect("spawn"));
    assert_eq!(status.code(), Some(101));

    let status = code(Process::spawn_fallible(|| Err::<(), _>("no")).expect("spawn"));
    assert_eq!(status.code(), Some(1));

    let status = code(Process::spawn_fallible(|| Ok::<_, String>(())).expect("spawn"));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn terminate_stops_a_sleeping_worker() {
    let _serial = serial();
    let mut worker = Process::spawn(|| std::thread::sleep(Duration::from_secs(60))).expect("spawn");
    assert!(worker.is_alive());
    assert_eq!(
        worker
            .join_timeout(Duration::from_millis(50))
            .expect("join_timeout"),
        None,
        "still sleeping"
    );
    worker.terminate().expect("terminate");
    let status = worker.join().expect("join");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(!worker.is_alive());
    // Signalling a reaped worker is a no-op, never a signal to a recycled pid.
    worker.terminate().expect("terminate after join");
    worker.kill().expect("kill after join");
    assert_eq!(
        worker.join().expect("join again").signal(),
        Some(libc::SIGTERM)
    );
}

#[test]
fn a_forked_worker_uses_the_proxies_it_captured() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn");
    let dict = manager.dict::<String, u32>().expect("dict");
    let mut worker =
        Process::spawn_fallible(|| dict.set("pid", &std::process::id())).expect("spawn");
    let status = worker.join().expect("join");
    assert!(status.success(), "worker failed: {status}");
    assert_eq!(
        dict.get("pid").expect("get"),
        Some(worker.pid()),
        "the worker wrote its pid"
    );
}

#[test]
fn a_program_worker_finds_the_manager_through_the_environment() {
    let _serial = serial();
    let manager = Manager::spawn().expect("spawn");
    let exe = std::env::current_exe().unwrap();
    let mut command = manager.command(exe);
    command
        .args(CHILD_ROLE_ARGS)
        .env(ROLE, "env-writer")
        .stdout(Stdio::null());
    let mut worker = Process::start(&mut command).expect("start the worker");
    let status = worker.join().expect("join");
    assert!(status.success(), "worker failed: {status}");

    let dict = manager
        .dict_named::<String, String>("from-worker")
        .expect("dict_named");
    assert_eq!(
        dict.get("greeting").expect("get"),
        Some("hello from a program".to_owned())
    );
}

#[test]
fn the_builder_adds_tcp_and_takes_an_authkey() {
    let _serial = serial();
    let manager = Manager::builder()
        .listen_tcp("127.0.0.1:0")
        .authkey(b"a key chosen by the program".to_vec())
        .spawn()
        .expect("spawn");
    assert_eq!(manager.authkey(), b"a key chosen by the program");
    let tcp = manager.addresses()[1].clone();
    let Address::Tcp(host_port) = &tcp else {
        panic!("expected a TCP address, got {tcp}");
    };
    assert!(!host_port.ends_with(":0"), "the bound port is reported");
    let remote = Client::connect(&tcp, manager.authkey()).expect("connect over TCP");
    let named = remote
        .dict_named::<String, i64>("shared")
        .expect("dict_named");
    named.set("x", &7).expect("set");
    let local = manager
        .dict_named::<String, i64>("shared")
        .expect("dict_named");
    assert_eq!(local.get("x").expect("get"), Some(7));
}

#[test]
fn an_empty_authkey_is_refused() {
    let err = Manager::builder().authkey(Vec::new()).spawn().unwrap_err();
    assert!(matches!(err, SpawnError::InvalidConfig(_)), "{err}");
}

#[test]
fn the_exec_start_method_serves_and_stops() {
    let _serial = serial();
    let manager = exec_builder().spawn().expect("spawn");
    let pid = manager.pid();
    let dir = socket_path(&manager).parent().unwrap().to_owned();
    let list = manager.list_named::<String>("log").expect("list_named");
    list.append("one").expect("append");
    assert_eq!(list.len().expect("len"), 1);
    let status = manager.shutdown().expect("shutdown");
    assert!(status.success(), "orderly exit, got {status}");
    assert!(!running(pid));
    assert!(!dir.exists());
}

#[test]
fn the_exec_start_method_works_in_a_tokio_program() {
    let _serial = serial();
    let mut program = role_command("tokio-program")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the program");
    let words = read_announcement(&mut program, "ANNOUNCE ");
    assert_eq!(words, ["exec-ok", "fork-result=true"]);
    assert!(program.wait().unwrap().success());
}

/// What the `tokio-main-*` roles check: a manager forked from inside a tokio runtime builds its
/// own, serves, and stops on `SIGTERM` alone (so its runtime receives signals); then the
/// role announces how it went and exits.
fn spawn_inside_tokio() {
    let manager = Manager::spawn().expect("Manager::spawn inside a tokio runtime");
    let dict = manager.dict::<String, i64>().expect("dict");
    dict.set("k", &7).expect("set");
    assert_eq!(dict.get("k").expect("get"), Some(7));
    // SAFETY: the manager is this process's unreaped child.
    assert_eq!(
        unsafe { libc::kill(manager.pid() as i32, libc::SIGTERM) },
        0
    );
    let stopped = common::wait_until(Duration::from_secs(20), || dict.get("k").is_err());
    assert!(stopped, "the manager did not stop on SIGTERM");
    let status = manager.shutdown().expect("reap the manager");
    assert!(status.success(), "an orderly exit on SIGTERM, got {status}");
    println!("ANNOUNCE tokio-ok");
    std::process::exit(0);
}

/// With no thread but the runtime's own and no signal handler of the program's.
#[tokio::main(flavor = "current_thread")]
async fn spawn_in_current_thread_runtime() {
    spawn_inside_tokio();
}

/// With worker threads and a signal handler of the program's own.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_in_multi_thread_runtime() {
    let _usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("a signal handler");
    spawn_inside_tokio();
}

/// Runs the role `role` and expects it to announce `tokio-ok`.
fn expect_tokio_role_ok(role: &str) {
    let _serial = serial();
    let mut program = role_command(role)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the program");
    let words = read_announcement(&mut program, "ANNOUNCE ");
    assert_eq!(words, ["tokio-ok"]);
    assert!(program.wait().unwrap().success());
}

#[test]
fn spawn_works_inside_a_current_thread_tokio_main() {
    expect_tokio_role_ok("tokio-main-current-thread");
}

#[test]
fn spawn_works_inside_a_multi_thread_tokio_main() {
    expect_tokio_role_ok("tokio-main-multi-thread");
}

#[test]
fn exec_without_the_hook_fails_cleanly() {
    let _serial = serial();
    // This binary run as `an_empty_authkey_is_refused` ignores the role and just exits.
    let err = Manager::builder()
        .exec(
            None,
            ["--exact", "an_empty_authkey_is_refused", "--test-threads=1"],
        )
        .spawn()
        .unwrap_err();
    assert!(matches!(err, SpawnError::ManagerExited(_)), "{err}");

    let mut program = role_command("unhandled").spawn().expect("start");
    assert!(
        program.wait().unwrap().success(),
        "the nested exec was refused"
    );
}

#[test]
fn handles_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Manager>();
    send::<Process>();
}

#[test]
fn a_forked_worker_can_spawn_its_own_manager() {
    let _serial = serial();
    let _outer = Manager::spawn().expect("spawn");
    let mut worker = Process::spawn_fallible(|| -> Result<(), Box<dyn std::error::Error>> {
        let inner = Manager::spawn()?;
        let value = inner.dict::<String, i64>()?;
        value.set("n", &1)?;
        let status = inner.shutdown()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("inner manager: {status}").into())
        }
    })
    .expect("spawn");
    assert!(worker.join().expect("join").success());
}

/// `Manager::spawn` gives its manager the budget `AGORA_SPIN_US` sets, as the `agora-manager`
/// program does and as the clients poll with: with `AGORA_SPIN_US=0` neither side polls,
/// whatever the start method; an explicit `spin_budget` wins.
#[test]
fn spawn_takes_the_polling_budget_from_agora_spin_us() {
    let _serial = serial();
    for (value, nanos) in [("0", "0"), ("250", "250000"), ("5000", "1000000")] {
        let mut child = role_command("spin-budget")
            .env(agora::ENV_SPIN_US, value)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let words = read_announcement(&mut child, "ANNOUNCE ");
        assert_eq!(
            words,
            [nanos, nanos, nanos, "20000"],
            "AGORA_SPIN_US={value}: this process, the forked manager, the exec'd manager, an \
             explicit budget"
        );
        assert!(child.wait().expect("reap the child").success());
    }
    // In this process, whatever AGORA_SPIN_US is: the manager polls as the client does.
    let manager = Manager::spawn().expect("spawn");
    assert_eq!(manager.spin_budget(), agora::spin_budget());
}
