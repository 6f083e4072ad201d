//! `agora-manager`: run a manager from the command line.
//!
//! ```text
//! agora-manager [--listen unix:PATH | --listen tcp:HOST:PORT]... [--authkey-file PATH]
//!               [--admin-authkey-file PATH] [--require-strong-authkey]
//!               [--tls-cert FILE --tls-key FILE]
//!               [--max-connections N] [--auth-timeout SECONDS] [--max-output-bytes BYTES]
//!               [--metrics HOST:PORT] [--log-format text|json] [--config FILE] ...
//! agora-manager inspect --address ADDRESS [--authkey-file PATH] [--json]
//! agora-manager limits --address ADDRESS [--authkey-file PATH] [--set NAME=VALUE]... [--json]
//! ```
//!
//! `--help` lists every flag; the limits are those of `PROTOCOL.md`, section 1.1. Every flag
//! but `--config` and `--lifeline-stdin` may be set in the config file instead
//! ([`agora_manager::config_file`]).
//!
//! Prints one line on stdout when it is ready (see `PROTOCOL.md`, section 6), logs to stderr
//! (`RUST_LOG` sets the level, `--log-format` the format), and stops on SIGTERM, SIGINT or the
//! `shutdown` method; SIGHUP is ignored.
//!
//! `inspect` connects to a running manager, calls `stats` (`PROTOCOL.md`, section 4.2.1) and
//! prints its objects and connections as tables, or the answer as JSON. `limits` calls `limits`
//! (section 4.2) to show, or with `--set` change, the limits that may change at run time.

use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use agora_manager::auth::STRONG_AUTHKEY_BYTES;
use agora_manager::config::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_OUTPUT_BYTES, FD_RESERVE};
use agora_manager::store::StoreSpec;
use agora_manager::throttle::ThrottleConfig;
use agora_manager::{config_file, Config, Listener};
use agora_proto::{spin, Limits};

/// A manager process for agora shared objects.
#[derive(Parser, Debug)]
#[command(
    name = "agora-manager",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Signals: SIGTERM and SIGINT stop the manager cleanly (parked calls are \
                  answered ShutdownError, the Unix socket files removed), as do the shutdown \
                  method and, with --lifeline-stdin, end-of-file on stdin. SIGHUP is logged \
                  and ignored: nothing is reread, restart the manager to change a setting \
                  (but for the limits that `agora-manager limits --set` changes at run time)."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Read flags from this TOML file: each key is a flag without its dashes
    /// (`max-connections = 100`, `listen = ["unix:/run/agora.sock"]`). Flags given on the
    /// command line override the file; an unknown key is an error. All flags but --config and
    /// --lifeline-stdin may be set there.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// How log lines on stderr are written: `text` (key=value fields, strings quoted) or `json`
    /// (one object a line, with the connection's fields under "span"). RUST_LOG sets the level.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Where to listen: `unix:PATH` or `tcp:HOST:PORT` (port 0 picks a free one). Repeatable.
    /// Default: a Unix socket in a fresh private directory.
    #[arg(long = "listen", value_name = "ADDRESS")]
    listen: Vec<String>,

    /// Serve TLS on every `tcp:` listener, with this PEM certificate chain (the server's
    /// certificate first); needs --tls-key. The ready line then names them `tls:HOST:PORT`,
    /// and a client that does not speak TLS gets no session. Unix sockets stay plain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// File holding the authkey as hex. Default: the AGORA_AUTHKEY environment variable (hex),
    /// else a fresh random key written to a new 0600 file named on the ready line. An empty
    /// key is refused; one shorter than 16 bytes is warned about (refused with
    /// --require-strong-authkey). A key file its group or others may read is warned about.
    /// Before authenticating, a connection may send hello and auth only, each message at
    /// most 64 KiB, with at most 64 KiB of replies unread, within --auth-timeout; anything
    /// else closes it. Failed attempts are logged and slowed down per peer (IP address, or
    /// user on a Unix socket): see --auth-burst and --auth-interval.
    #[arg(long, value_name = "PATH")]
    authkey_file: Option<PathBuf>,

    /// File holding the admin authkey as hex (default: the AGORA_ADMIN_AUTHKEY environment
    /// variable). Connections authenticated with it may call shutdown, stats and limits; those
    /// authenticated with the authkey get PermissionError for them. Without an admin
    /// authkey every authenticated connection may.
    #[arg(long, value_name = "PATH")]
    admin_authkey_file: Option<PathBuf>,

    /// Refuse to start with an authkey (or admin authkey) shorter than 16 bytes, instead of
    /// warning about it.
    #[arg(long)]
    require_strong_authkey: bool,

    /// Largest message a client may send, in bytes (at least 1024: below that not even the
    /// handshake fits).
    #[arg(long, default_value_t = Limits::default().max_message_bytes, value_parser = at_least::<1024>)]
    max_message_bytes: usize,

    /// Deepest nesting of arrays and maps in a message (at least 2: a request's params are an
    /// array in an array; at most 256, beyond which decoding could overflow a stack).
    #[arg(long, default_value_t = Limits::default().max_depth, value_parser = depth)]
    max_depth: usize,

    /// Most elements in one array or entries in one map (at least 4: a request is an array of
    /// four).
    #[arg(long, default_value_t = Limits::default().max_container_len, value_parser = at_least::<4>)]
    max_container_len: usize,

    /// Stop when standard input reaches end-of-file: a parent that starts the manager with a
    /// pipe on its stdin and keeps the write end gets a manager that cannot outlive it, even
    /// when the parent is killed with SIGKILL.
    #[arg(long)]
    lifeline_stdin: bool,

    /// Most requests one connection may have in flight. This, --max-connections,
    /// --auth-timeout and --max-output-bytes may be changed while the manager runs, by an
    /// admin connection (`agora-manager limits --set`).
    #[arg(long, default_value_t = 65_536, value_parser = at_least::<1>)]
    max_in_flight: usize,

    /// Most connections served at once; one more is told `LimitError` and closed at once.
    /// Default: 10000, or the open-files limit (RLIMIT_NOFILE, which the manager raises
    /// towards its hard limit as far as needed) less 64 if that is lower.
    #[arg(long, value_name = "N", value_parser = at_least::<1>)]
    max_connections: Option<usize>,

    /// Seconds a new connection has to authenticate (hello, then auth) before it is closed.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    auth_timeout: Duration,

    /// Guessing slowdown: how many `auth` attempts one peer (an IP address, an IPv6 /64, or
    /// a Unix uid) may make at once before each must wait its turn.
    #[arg(long, value_name = "N", default_value_t = ThrottleConfig::default().burst, value_parser = burst)]
    auth_burst: u32,

    /// Guessing slowdown: seconds between one peer's attempts beyond the burst (its steady
    /// rate is one attempt per interval; a successful attempt gives its turn back).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = Seconds(ThrottleConfig::default().interval),
        value_parser = |text: &str| seconds(text).map(Seconds)
    )]
    auth_interval: Seconds,

    /// Seconds an exported object (a token, a pickle, a fork) stays alive waiting for the
    /// receiving process to adopt it, when nothing else holds it.
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = seconds)]
    handoff_seconds: Duration,

    /// Where the objects live: `memory` (this process; the default and the fastest) or
    /// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, an etcd cluster that several managers
    /// serve the same objects from (needs a manager built with the cargo feature `etcd`;
    /// see docs/stores.md).
    #[arg(long, value_name = "STORE", default_value = "memory")]
    store: StoreSpec,

    /// With the etcd store: seconds after a manager dies until what its connections held
    /// (locks, permits) is released to others.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = seconds)]
    store_lease_seconds: Duration,

    /// Bytes of replies one connection may have unwritten (its client not reading them)
    /// before the manager stops reading its requests until they are written.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_OUTPUT_BYTES, value_parser = at_least::<1>)]
    max_output_bytes: usize,

    /// How long, in microseconds, a busy connection polls for its next request before its
    /// thread sleeps (0: never poll; at most 1000 are used). Default: the AGORA_SPIN_US
    /// environment variable (the program refuses to start if it is not a whole number), else 50
    /// (0 when the manager may run on one CPU only).
    #[arg(long, value_name = "MICROSECONDS", value_parser = micros)]
    spin_us: Option<u64>,

    /// How many threads serve the connections (at least 1). Default: one for every two CPUs
    /// the manager may run on, at least one and at most two: the manager's clients are mostly
    /// on the same machine, and a thread of the manager is a CPU they do not get.
    #[arg(long, value_name = "N", value_parser = at_least::<1>)]
    threads: Option<usize>,

    /// Serve metrics for Prometheus at http://HOST:PORT/metrics (calls and errors by method,
    /// parked calls, connections, objects by kind). Plain HTTP with no authentication: bind
    /// it to an address only trusted scrapers reach (127.0.0.1, say).
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// `key=value` fields after the message; string values quoted.
    Text,
    /// One JSON object a line.
    Json,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Show what is inside a running manager: every object (its size, who holds it, the calls
    /// parked on it and what they wait for) and every connection (its peer, age, calls, what
    /// it holds and waits for), with totals.
    Inspect(InspectArgs),
    /// Show the limits of a running manager that may change while it runs (max_connections,
    /// max_in_flight, max_output_bytes, auth_timeout in seconds), or change some with --set.
    /// A lowered max_connections closes nobody: new connections are refused until fewer are
    /// open. The limits on each message (--max-message-bytes, --max-depth,
    /// --max-container-len) cannot change without a restart.
    Limits(LimitsArgs),
}

/// How a subcommand reaches a running manager as its operator.
#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The manager's address: `unix:PATH`, `tcp:HOST:PORT` or `tls:HOST:PORT` (its certificate
    /// verified against the system's roots, or the CA file in AGORA_TLS_CA); a comma-separated
    /// list reaches the first manager that answers. Default: the AGORA_ADDRESS environment
    /// variable.
    #[arg(long, value_name = "ADDRESS")]
    address: Option<String>,

    /// File holding the authkey as hex: the admin authkey when the manager has one (stats and
    /// limits are reserved to admin connections). Default: the AGORA_ADMIN_AUTHKEY
    /// environment variable (hex), else AGORA_AUTHKEY.
    #[arg(long, value_name = "PATH")]
    authkey_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct InspectArgs {
    #[command(flatten)]
    admin: AdminArgs,

    /// Print the manager's answer as JSON (the fields of PROTOCOL.md, section 4.2.1) instead
    /// of tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct LimitsArgs {
    #[command(flatten)]
    admin: AdminArgs,

    /// Change a limit: NAME=VALUE, as in max_connections=500 or auth_timeout=2.5 (seconds).
    /// Repeatable; the manager checks them all and changes none if one is refused.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = limit_setting)]
    set: Vec<(String, rmpv::Value)>,

    /// Print the limits as a JSON object instead of one `name value` line each.
    #[arg(long)]
    json: bool,
}

/// `NAME=VALUE` of `limits --set`: the value sent as an integer, else a float, else a string,
/// for the manager to check (it knows which limits exist and what each takes).
fn limit_setting(text: &str) -> Result<(String, rmpv::Value), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err("expected NAME=VALUE, as in max_connections=500".to_owned());
    };
    let value = value.trim();
    let value = if let Ok(n) = value.parse::<u64>() {
        rmpv::Value::from(n)
    } else if let Ok(n) = value.parse::<i64>() {
        rmpv::Value::from(n)
    } else if let Ok(x) = value.parse::<f64>() {
        rmpv::Value::from(x)
    } else {
        rmpv::Value::from(value)
    };
    Ok((name.trim().to_owned(), value))
}

/// A whole number no smaller than `MIN`: a limit below it would make every client fail.
fn at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n < MIN => Err(format!(
            "must be at least {MIN}: below that no client could talk to the manager"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// A nesting depth from 2 to [`Limits::DEEPEST`].
fn depth(text: &str) -> Result<usize, String> {
    let n = at_least::<2>(text)?;
    if n > Limits::DEEPEST {
        return Err(format!(
            "may be at most {}: some methods decode values recursively, and deeper nesting \
             could overflow a thread's stack",
            Limits::DEEPEST
        ));
    }
    Ok(n)
}

/// An `--auth-burst`: at least 1, or no client could authenticate.
fn burst(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("must be at least 1: with none no client could authenticate".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number from 1 to {}: {e}", u32::MAX)),
    }
}

/// A duration written, and shown as a default in `--help`, as a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seconds(Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// A whole number of microseconds, 0 included.
fn micros(text: &str) -> Result<u64, String> {
    text.parse()
        .map_err(|e| format!("not a whole number of microseconds: {e}"))
}

/// A positive number of seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("must be more than 0 seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable duration: {e}"))
}

/// How many connections may be served: the flag, else [`DEFAULT_MAX_CONNECTIONS`]; either
/// way the soft open-files limit is raised (within the hard one) to leave [`FD_RESERVE`]
/// descriptors besides them. A flag the limit cannot allow stops the program; the default
/// shrinks to fit.
fn max_connections(flag: Option<usize>) -> Result<usize, Fatal> {
    let wanted = flag.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let allowed =
        raise_open_files_limit(wanted.saturating_add(FD_RESERVE)).saturating_sub(FD_RESERVE);
    match flag {
        Some(n) if n > allowed => Err(Fatal(format!(
            "--max-connections {n} needs {} open files, but the open-files limit \
             (RLIMIT_NOFILE) allows {}: raise it (ulimit -n) or pass a smaller --max-connections",
            n.saturating_add(FD_RESERVE),
            allowed + FD_RESERVE
        ))),
        Some(n) => Ok(n),
        None => Ok(wanted.min(allowed).max(1)),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `wanted`, or as near as the hard limit allows; gives
/// the soft limit in force afterwards.
fn raise_open_files_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return usize::MAX;
    }
    let wanted = libc::rlim_t::try_from(wanted).unwrap_or(libc::RLIM_INFINITY);
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// A fatal startup error, with what to do about it.
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn main() -> ExitCode {
    let result = arguments().and_then(|args| {
        init_logging(args.log_format);
        match &args.command {
            Some(Command::Inspect(inspect_args)) => inspect(inspect_args),
            Some(Command::Limits(limits_args)) => limits(limits_args),
            None => run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("agora-manager: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments: the command line, over the config file's keys when `--config` names one.
/// (Help, version and a bad command line end the program here, as clap does.)
fn arguments() -> Result<Args, Fatal> {
    let cli: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // First the command line alone, leniently: only which flags it gives, and the file's name,
    // are wanted from it; its errors are reported by the full parse below.
    let given = Args::command().ignore_errors(true).get_matches_from(&cli);
    let Some(path) = given.get_one::<PathBuf>("config") else {
        return Ok(Args::parse_from(cli));
    };
    let file = config_file::read(path).map_err(|e| Fatal(e.in_file(path)))?;
    let from_file = config_file::args_from_table(&Args::command(), &given, &file)
        .map_err(|e| Fatal(e.in_file(path)))?;
    let mut merged = cli;
    // After the program's name and before the command line's own flags.
    let at = merged.len().min(1);
    merged.splice(at..at, from_file);
    Ok(Args::parse_from(merged))
}

/// Logs to stderr in `format`, at the level `RUST_LOG` sets (default: info).
fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        // A failed write to stderr (a closed pipe, say) is otherwise reported with eprintln!,
        // which panics on that same stderr: the manager would die without removing its
        // socket file. Losing log lines is the lesser harm.
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Files this run created, removed when it ends however it ends (a failed start included).
#[derive(Default)]
struct Cleanup {
    dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl Cleanup {
    /// The private directory, made on first use.
    fn private_dir(&mut self) -> Result<PathBuf, Fatal> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let dir = make_private_dir()?;
        self.dir = Some(dir.clone());
        Ok(dir)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(path) = &self.key_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = &self.dir {
            // Only if empty: the socket file is removed by the server itself.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The polling budget: the flag, else `AGORA_SPIN_US` read as every client reads it
/// (`agora_proto::spin`), so that one variable tunes or turns off polling everywhere, else the
/// default. A bad variable stops the program, where a client would warn and carry on: an
/// operator's typo is better seen at startup than felt later as latency.
fn spin_budget(flag: Option<u64>) -> Result<Duration, Fatal> {
    match flag {
        Some(micros) => Ok(spin::capped(Duration::from_micros(micros))),
        None => spin::from_env().map_err(|e| {
            Fatal(format!(
                "{e}; set it to a number such as {}, unset it, or pass --spin-us",
                spin::DEFAULT_BUDGET.as_micros()
            ))
        }),
    }
}

fn run(args: Args) -> Result<(), Fatal> {
    let mut cleanup = Cleanup::default();
    let authkey = authkey(&args, &mut cleanup)?;
    let admin_key = admin_authkey(&args)?;
    check_key_strength(&authkey, admin_key.as_deref(), args.require_strong_authkey)?;
    let mut listeners = Vec::new();
    if args.listen.is_empty() {
        listeners.push(bind_unix(&cleanup.private_dir()?.join("manager.sock"))?);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            agora_manager::tls::server_config(cert, key)
                .map_err(|e| Fatal(format!("cannot serve TLS: {e}")))?,
        ),
        _ => None,
    };
    for address in &args.listen {
        listeners.push(bind(address, tls.as_ref())?);
    }
    if tls.is_some() && !listeners.iter().any(|l| matches!(l, Listener::Tls { .. })) {
        return Err(Fatal(
            "--tls-cert and --tls-key serve TLS on tcp: listeners, and there is none: \
             add --listen tcp:HOST:PORT"
                .to_owned(),
        ));
    }

    let mut config = Config::new(authkey);
    config.admin_authkey = admin_key;
    warn_about_plain_tcp(&listeners);
    config.limits = Limits {
        max_message_bytes: args.max_message_bytes,
        max_depth: args.max_depth,
        max_container_len: args.max_container_len,
    };
    config.max_in_flight = args.max_in_flight;
    config.max_connections = max_connections(args.max_connections)?;
    config.auth_timeout = args.auth_timeout;
    config.auth_throttle = ThrottleConfig {
        burst: args.auth_burst,
        interval: args.auth_interval.0,
    };
    config.handoff_lease = args.handoff_seconds;
    config.store = match args.store.clone() {
        StoreSpec::Etcd(mut spec) => {
            spec.lease_ttl = args.store_lease_seconds;
            StoreSpec::Etcd(spec)
        }
        memory => memory,
    };
    config.max_output_bytes = args.max_output_bytes;
    config.spin.budget = spin_budget(args.spin_us)?;
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    let metrics = args.metrics.as_deref().map(bind_metrics).transpose()?;

    let mut line = String::from("agora-manager ready");
    for l in &listeners {
        line.push(' ');
        line.push_str(&l.address());
    }
    if let Some(path) = &cleanup.key_file {
        line.push_str(&format!(" authkey-file={}", path.display()));
    }
    let mut tail = String::new();
    if let Some(addr) = metrics.as_ref().and_then(|l| l.local_addr().ok()) {
        tail.push_str(&format!(" metrics=http://{addr}/metrics"));
    }
    if config.store != StoreSpec::Memory {
        tail.push_str(&format!(" store={}", config.store));
    }
    // Printed once the listeners accept and the signal handlers are in place: clients may
    // connect, and supervisors may signal, as soon as they read this line. The run is known
    // only then: an etcd store has its own, shared by every manager serving it.
    let ready = move |run: &agora_manager::Run| {
        line.push_str(&format!(" run={}{tail}", run.id.hyphenated()));
        let mut stdout = io::stdout().lock();
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    };
    let lifeline = if args.lifeline_stdin {
        use std::os::fd::AsFd;
        Some(io::stdin().as_fd().try_clone_to_owned()?)
    } else {
        None
    };
    agora_manager::run_blocking_with(listeners, metrics, config, lifeline, ready)
        .map_err(|e| Fatal(format!("the manager failed: {e}")))
}

/// A client of the manager `args` names, authenticated with the key they give: what
/// `inspect` and `limits` call it with.
fn admin_client(args: &AdminArgs) -> Result<AdminClient, Fatal> {
    let address = match &args.address {
        Some(address) => address.clone(),
        None => std::env::var(agora_client::ENV_ADDRESS).map_err(|_| {
            Fatal(format!(
                "no manager to reach: pass --address or set {}",
                agora_client::ENV_ADDRESS
            ))
        })?,
    };
    // A list (as AGORA_ADDRESS may hold for clients of several managers): the first manager
    // that answers is the one inspected or changed.
    let addresses: agora_client::Addresses = address
        .parse()
        .map_err(|e| Fatal(format!("bad --address {address:?}: {e}")))?;
    let from_env = |var: &'static str| std::env::var(var).ok().map(|text| (text, var));
    let (authkey, key_from) = match &args.authkey_file {
        Some(path) => (read_authkey_file(path)?, "--authkey-file"),
        None => match from_env(ENV_ADMIN_AUTHKEY).or_else(|| from_env(agora_client::ENV_AUTHKEY)) {
            Some((text, var)) => (parse_authkey(&text, var)?, var),
            None => {
                return Err(Fatal(format!(
                    "no authkey: pass --authkey-file or set {ENV_ADMIN_AUTHKEY} or {} (hex)",
                    agora_client::ENV_AUTHKEY
                )))
            }
        },
    };
    // Named by where the key came from, so that a refused key says which one to fix.
    let options = agora_client::ConnectOptions::from_env()?;
    let client = agora_client::Client::connect_from(&addresses, &authkey, key_from, &options)
        .map_err(|e| Fatal(format!("cannot reach the manager at {addresses}: {e}")))?;
    let address = client.address().clone();
    Ok(AdminClient { client, address })
}

/// A client authenticated for the administrative methods.
struct AdminClient {
    client: agora_client::Client,
    address: agora_client::Address,
}

impl AdminClient {
    /// Calls an admin method (`PROTOCOL.md`, section 2) and decodes its answer; a refusal for
    /// want of the admin key says which key to pass.
    fn call(&self, method: &str, params: &[&[u8]]) -> Result<rmpv::Value, Fatal> {
        let address = &self.address;
        let raw = self.client.call_raw(method, params).map_err(|e| {
            if e.is(agora_proto::ErrorName::PermissionError) {
                Fatal(format!(
                    "the manager at {address} keeps {method} for admin connections, and this \
                     key is its worker authkey: pass the admin authkey (--authkey-file, or \
                     {ENV_ADMIN_AUTHKEY})"
                ))
            } else {
                Fatal(format!("{method} failed: {e}"))
            }
        })?;
        rmpv::decode::read_value(&mut &raw[..])
            .map_err(|e| Fatal(format!("the manager's answer is not MessagePack: {e}")))
    }
}

/// Writes `text` to stdout.
fn print(text: &str) -> Result<(), Fatal> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())?;
    Ok(())
}

/// `agora-manager inspect`: prints what `stats` answers, as tables or JSON.
fn inspect(args: &InspectArgs) -> Result<(), Fatal> {
    let stats = admin_client(&args.admin)?.call("stats", &[])?;
    let text = if args.json {
        let mut json = agora_manager::inspect::to_json(&stats)?;
        json.push('\n');
        json
    } else {
        agora_manager::inspect::render(&stats)
    };
    print(&text)
}

/// `agora-manager limits`: prints the limits `limits` answers, after the changes of `--set`.
fn limits(args: &LimitsArgs) -> Result<(), Fatal> {
    let client = admin_client(&args.admin)?;
    // No params reads the limits; one map of the changes sets them.
    let mut changes = Vec::new();
    if !args.set.is_empty() {
        let map = args
            .set
            .iter()
            .map(|(name, value)| (rmpv::Value::from(name.as_str()), value.clone()))
            .collect();
        rmpv::encode::write_value(&mut changes, &rmpv::Value::Map(map))?;
    }
    let params: &[&[u8]] = if changes.is_empty() { &[] } else { &[&changes] };
    let answer = client.call("limits", params)?;
    let mut text = if args.json {
        agora_manager::inspect::to_json(&answer)?
    } else {
        let entries = answer.as_map().map(Vec::as_slice).unwrap_or_default();
        let lines: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{} {v}", k.as_str().unwrap_or("?")))
            .collect();
        lines.join("\n")
    };
    text.push('\n');
    print(&text)
}

/// Binds the listener of `--metrics HOST:PORT`.
fn bind_metrics(address: &str) -> Result<std::net::TcpListener, Fatal> {
    let host_port = address.strip_prefix("tcp:").unwrap_or(address);
    std::net::TcpListener::bind(host_port)
        .map_err(|e| Fatal(format!("cannot serve metrics on {address}: {e}")))
}

/// An authkey written as hex, read from `source` (for messages).
fn parse_authkey(hex_text: &str, source: &str) -> Result<Vec<u8>, Fatal> {
    let key = hex::decode(hex_text.trim()).map_err(|e| {
        let why = match e {
            hex::FromHexError::OddLength => "an odd number of digits".to_owned(),
            hex::FromHexError::InvalidHexCharacter { c, index } => {
                format!("{c:?} at position {index} is not a hex digit")
            }
            other => other.to_string(),
        };
        Fatal(format!(
            "{source} does not hold the authkey as hex ({why}): write it as hex digits, \
             as `openssl rand -hex 32` prints them"
        ))
    })?;
    if key.is_empty() {
        return Err(Fatal(format!("{source} holds an empty authkey")));
    }
    Ok(key)
}

/// The authkey in file `path`, as hex. A file its group or others may read is warned about:
/// whoever can read it can use the manager.
fn read_authkey_file(path: &Path) -> Result<Vec<u8>, Fatal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fatal(format!(
            "cannot read the authkey file {}: {e}",
            path.display()
        ))
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!(
                file = path.display().to_string().as_str(),
                mode = format!("{:o}", mode & 0o777),
                "the authkey file is readable by its group or by others: anyone who can read \
                 it can use the manager; chmod 600 it"
            );
        }
    }
    parse_authkey(&text, &format!("{}", path.display()))
}

/// The environment variable holding the admin authkey, as hex.
const ENV_ADMIN_AUTHKEY: &str = "AGORA_ADMIN_AUTHKEY";

/// The admin authkey: `--admin-authkey-file`, else `AGORA_ADMIN_AUTHKEY`, else none.
fn admin_authkey(args: &Args) -> Result<Option<Vec<u8>>, Fatal> {
    if let Some(path) = &args.admin_authkey_file {
        return read_authkey_file(path).map(Some);
    }
    match std::env::var(ENV_ADMIN_AUTHKEY) {
        Ok(text) => parse_authkey(&text, ENV_ADMIN_AUTHKEY).map(Some),
        Err(_) => Ok(None),
    }
}

/// Warns about an authkey shorter than [`STRONG_AUTHKEY_BYTES`], or refuses it when `strict`;
/// refuses an admin authkey that is the authkey (every worker would be admin).
fn check_key_strength(authkey: &[u8], admin_key: Option<&[u8]>, strict: bool) -> Result<(), Fatal> {
    let keys = [
        Some(("authkey", authkey)),
        admin_key.map(|k| ("admin authkey", k)),
    ];
    for (what, key) in keys.into_iter().flatten() {
        if key.len() >= STRONG_AUTHKEY_BYTES {
            continue;
        }
        let problem = format!(
            "the {what} is {} bytes long, fewer than {STRONG_AUTHKEY_BYTES}: it could be \
             guessed; use 32 random bytes (openssl rand -hex 32)",
            key.len()
        );
        if strict {
            return Err(Fatal(format!("{problem} (--require-strong-authkey)")));
        }
        tracing::warn!("{problem}");
    }
    if admin_key == Some(authkey) {
        return Err(Fatal(
            "the admin authkey is the authkey: every worker would be admin; use another key \
             for --admin-authkey-file, or none"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Warns, loudly, about plain TCP listeners reachable from other hosts: the authkey is never
/// sent, but everything after `auth` (every object's contents) crosses the network readable
/// and changeable by anyone on the path.
fn warn_about_plain_tcp(listeners: &[Listener]) {
    for listener in listeners {
        let Listener::Tcp(tcp) = listener else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else {
            continue;
        };
        if !addr.ip().is_loopback() {
            tracing::warn!(
                address = listener.address().as_str(),
                "LISTENING ON A NON-LOOPBACK ADDRESS WITHOUT TLS: calls and objects cross the \
                 network in clear, readable and changeable by anyone on the path; serve TLS \
                 (--tls-cert and --tls-key) or listen on 127.0.0.1"
            );
        }
    }
}

/// The authkey, and the file it was written to when it was generated here.
fn authkey(args: &Args, cleanup: &mut Cleanup) -> Result<Vec<u8>, Fatal> {
    if let Some(path) = &args.authkey_file {
        return read_authkey_file(path);
    }
    if let Ok(text) = std::env::var(agora_client::ENV_AUTHKEY) {
        return parse_authkey(&text, agora_client::ENV_AUTHKEY);
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| Fatal(format!("no randomness for an authkey: {e}")))?;
    let path = cleanup.private_dir()?.join("authkey");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Fatal(format!("cannot create {}: {e}", path.display())))?;
    cleanup.key_file = Some(path);
    writeln!(file, "{}", hex::encode(&key))?;
    Ok(key)
}

/// A new directory only this user can enter.
fn make_private_dir() -> Result<PathBuf, Fatal> {
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| Fatal(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("agora-{}", hex::encode(suffix)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Fatal(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Binds `address`; a TCP one serves TLS when `tls` is given.
fn bind(address: &str, tls: Option<&Arc<rustls::ServerConfig>>) -> Result<Listener, Fatal> {
    if let Some(path) = address.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(Fatal(format!(
                "bad address {address:?}: unix: needs a path, as in unix:/tmp/agora.sock"
            )));
        }
        return bind_unix(Path::new(path));
    }
    if let Some(host_port) = address.strip_prefix("tcp:") {
        let listener = std::net::TcpListener::bind(host_port)
            .map_err(|e| Fatal(format!("cannot listen on {address}: {e}")))?;
        return Ok(match tls {
            Some(config) => Listener::Tls {
                listener,
                config: config.clone(),
            },
            None => Listener::Tcp(listener),
        });
    }
    if address.starts_with("tls:") {
        return Err(Fatal(format!(
            "bad address {address:?}: listen on tcp:HOST:PORT with --tls-cert and --tls-key \
             to serve TLS (clients then connect to tls:HOST:PORT)"
        )));
    }
    Err(Fatal(format!(
        "bad address {address:?}: expected unix:PATH or tcp:HOST:PORT"
    )))
}

/// Binds a Unix socket readable and writable by this user only. A stale socket file left by a
/// manager that died is replaced; a live one is an error.
fn bind_unix(path: &Path) -> Result<Listener, Fatal> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Fatal(format!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(Fatal(format!(
                "another process is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| Fatal(format!("cannot remove stale {}: {e}", path.display())))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| Fatal(format!("cannot listen on unix:{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Fatal(format!(
            "cannot make {} private (mode 0600): {e}",
            path.display()
        ))
    })?;
    Ok(Listener::Unix {
        listener,
        path: path.to_owned(),
    })
}
