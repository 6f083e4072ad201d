//! The manager's config file (`agora-manager --config FILE`): TOML whose keys are the flags of
//! the run command.
//!
//! The file does not describe the settings a second time: each key is a flag's long name
//! without its dashes (`max-connections = 100` is `--max-connections 100`), and its value is
//! checked by the very parser that checks the flag. So every flag is a key as soon as it
//! exists, and a value is refused, or accepted, the same from either place. A flag given on
//! the command line overrides the file's key (a list such as `listen` is replaced whole, not
//! added to). A key that is no flag is an error naming it, as is a value that the flag's
//! parser refuses.
//!
//! Values: a string, a number or a boolean; a list for a flag that may be repeated (`listen`);
//! `true` turns a switch on, `false` leaves it off. Relative paths are relative to the
//! manager's working directory, as on the command line.
//!
//! ```
//! use agora_manager::config_file;
//! use clap::{Arg, ArgAction, Command};
//!
//! let cmd = Command::new("demo")
//!     .arg(Arg::new("listen").long("listen").action(ArgAction::Append))
//!     .arg(Arg::new("max_depth").long("max-depth"));
//! let file: toml::Table = "listen = ['unix:/run/a.sock']\nmax-depth = 8".parse()?;
//! // On the command line: `--max-depth 4`, which wins over the file's 8.
//! let given = cmd.clone().get_matches_from(["demo", "--max-depth", "4"]);
//! let args = config_file::args_from_table(&cmd, &given, &file)?;
//! assert_eq!(args, ["--listen", "unix:/run/a.sock"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Flags that have no key: the file itself, and what only a command line can mean.
/// `lifeline-stdin` describes how a parent process started this one, not a deployment.
pub const NOT_IN_FILE: &[&str] = &["config", "help", "version", "lifeline-stdin"];

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and why the TOML parser stopped.
        message: String,
    },
    /// A key that is not a flag of the run command.
    #[error(
        "unknown key `{key}`: the keys are the flags of `agora-manager --help` without their \
         dashes, as `max-connections = 100`"
    )]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A key naming a flag that a file cannot set.
    #[error("`{key}` cannot be set in a config file, only on the command line")]
    NotInFile {
        /// The key.
        key: String,
    },
    /// A value the flag's parser refuses, or of a type the flag cannot take.
    #[error("`{key} = {value}`: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as the file wrote it.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigFileError {
    /// The error, saying which file it is in (a read or syntax error already does).
    pub fn in_file(&self, path: &Path) -> String {
        match self {
            ConfigFileError::Read { .. } | ConfigFileError::Syntax { .. } => self.to_string(),
            _ => format!("config file {}: {self}", path.display()),
        }
    }
}

/// Reads the TOML file at `path`.
pub fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigFileError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
}

/// The command-line arguments `file` stands for, for `cmd`, leaving out every flag the command
/// line gave (`given`: the command line parsed on its own). Each value is checked with its
/// flag's parser.
pub fn args_from_table(
    cmd: &Command,
    given: &ArgMatches,
    file: &toml::Table,
) -> Result<Vec<OsString>, ConfigFileError> {
    let mut args = Vec::new();
    for (key, value) in file {
        let arg = flag(cmd, key)?;
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = format!("--{key}");
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => args.push(flag.into()),
                toml::Value::Boolean(false) => {}
                other => return Err(bad(key, other, "must be true or false")),
            }
            continue;
        }
        for text in texts(key, arg, value)? {
            check(arg, key, value, &text)?;
            args.push(OsString::from(&flag));
            args.push(text.into());
        }
    }
    Ok(args)
}

/// The flag of `cmd` that `key` names.
fn flag<'c>(cmd: &'c Command, key: &str) -> Result<&'c Arg, ConfigFileError> {
    if NOT_IN_FILE.contains(&key) {
        return Err(ConfigFileError::NotInFile {
            key: key.to_owned(),
        });
    }
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(key))
        .ok_or_else(|| ConfigFileError::UnknownKey {
            key: key.to_owned(),
        })
}

/// The value of `key` as the text of one flag each: one for a scalar, one per item of a list
/// for a repeatable flag.
fn texts(key: &str, arg: &Arg, value: &toml::Value) -> Result<Vec<String>, ConfigFileError> {
    match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| bad(key, value, "must be a list of strings")))
            .collect(),
        toml::Value::Array(_) => Err(bad(key, value, "takes one value, not a list")),
        other => scalar(other)
            .map(|text| vec![text])
            .ok_or_else(|| bad(key, value, "must be a string or a number")),
    }
}

/// A string or a number as a command line would spell it.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        _ => None,
    }
}

/// Runs the flag's own parser on `text`, so that the file is held to what the flag is.
fn check(arg: &Arg, key: &str, value: &toml::Value, text: &str) -> Result<(), ConfigFileError> {
    // Alone in a command of its own: the flag's other rules (`requires`) are the whole
    // command line's business, checked once the file and the command line are put together.
    let alone = Arg::new(arg.get_id().clone())
        .allow_hyphen_values(true)
        .value_parser(arg.get_value_parser().clone());
    let parsed = Command::new("config-file")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([text]);
    let Err(e) = parsed else { return Ok(()) };
    let reason = match std::error::Error::source(&e) {
        Some(source) => source.to_string(),
        None => {
            let accepted: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect();
            if accepted.is_empty() {
                e.kind().to_string()
            } else {
                format!("must be one of {}", accepted.join(", "))
            }
        }
    };
    Err(bad(key, value, &reason))
}

fn bad(key: &str, value: &toml::Value, reason: &str) -> ConfigFileError {
    ConfigFileError::BadValue {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_least_one(text: &str) -> Result<usize, String> {
        match text.parse::<usize>() {
            Ok(0) => Err("must be at least 1".to_owned()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("not a whole number: {e}")),
        }
    }

    fn command() -> Command {
        Command::new("demo")
            .arg(Arg::new("listen").long("listen").action(ArgAction::Append))
            .arg(
                Arg::new("max_in_flight")
                    .long("max-in-flight")
                    .value_parser(at_least_one),
            )
            .arg(
                Arg::new("log_format")
                    .long("log-format")
                    .value_parser(["text", "json"]),
            )
            .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
            .arg(Arg::new("config").long("config"))
    }

    fn args(file: &str, cli: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let cmd = command();
        let given = cmd
            .clone()
            .get_matches_from(std::iter::once("demo").chain(cli.iter().copied()));
        let table: toml::Table = file.parse().unwrap();
        Ok(args_from_table(&cmd, &given, &table)?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn every_kind_of_value_becomes_flags() {
        let file = "listen = ['unix:/a', 'tcp:127.0.0.1:0']\nmax-in-flight = 7\n\
                    log-format = 'json'\nquiet = true";
        assert_eq!(
            args(file, &[]).unwrap(),
            [
                "--listen",
                "unix:/a",
                "--listen",
                "tcp:127.0.0.1:0",
                "--log-format",
                "json",
                "--max-in-flight",
                "7",
                "--quiet"
            ]
        );
        assert!(args("quiet = false", &[]).unwrap().is_empty());
    }

    #[test]
    fn the_command_line_wins_whole() {
        let file = "listen = ['unix:/a']\nmax-in-flight = 7";
        assert_eq!(
            args(file, &["--listen", "unix:/b"]).unwrap(),
            ["--max-in-flight", "7"]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (file, key, why) in [
            ("max-in-flight = 0", "max-in-flight", "at least 1"),
            (
                "max-in-flight = 'many'",
                "max-in-flight",
                "not a whole number",
            ),
            ("max-in-flight = [1, 2]", "max-in-flight", "not a list"),
            ("log-format = 'xml'", "log-format", "one of text, json"),
            ("quiet = 'yes'", "quiet", "true or false"),
            ("listen = [{a = 1}]", "listen", "list of strings"),
        ] {
            let err = args(file, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key} = ")), "{file}: {err}");
            assert!(err.contains(why), "{file}: {err}");
        }
    }

    #[test]
    fn unknown_and_forbidden_keys_are_refused_by_name() {
        let err = args("max_in_flight = 3", &[]).unwrap_err();
        assert!(matches!(&err, ConfigFileError::UnknownKey { key } if key == "max_in_flight"));
        let err = args("[limits]\nmax = 3", &[]).unwrap_err();
        assert!(matches!(&err, ConfigFileError::UnknownKey { key } if key == "limits"));
        let err = args("config = 'other.toml'", &[]).unwrap_err();
        assert!(matches!(&err, ConfigFileError::NotInFile { key } if key == "config"));
    }
}
