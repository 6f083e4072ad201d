//! The tutorials' Manager program: a worker process fills a shared dict with squares and
//! extends a shared list, and the parent, once the worker is done, prints what it sees.
//!
//! ```text
//! cargo run --example manager_dict_list
//! ```
//!
//! Python's version holds `{'arg0': 0, ..., 'arg9': 81}` and `[11, 12, 13, 14, 15]`; so must
//! this one, or it exits with status 1.

use std::error::Error;
use std::process::ExitCode;

use agora::{Manager, Process};

/// What the parent read back after the worker finished.
#[derive(Debug)]
pub struct Outcome {
    /// The dict's items, in insertion order.
    pub dict: Vec<(String, i64)>,
    /// The list.
    pub list: Vec<i64>,
}

impl Outcome {
    /// The program's invariant: the parent sees every write the worker made.
    pub fn check(&self) -> Result<(), String> {
        let want: Vec<(String, i64)> = (0..10).map(|i| (format!("arg{i}"), i * i)).collect();
        if self.dict != want {
            return Err(format!("dict is {:?}, want {want:?}", self.dict));
        }
        if self.list != [11, 12, 13, 14, 15] {
            return Err(format!(
                "list is {:?}, want [11, 12, 13, 14, 15]",
                self.list
            ));
        }
        Ok(())
    }
}

/// Starts a manager, runs the worker, and reads the dict and list back.
pub fn run() -> Result<Outcome, Box<dyn Error>> {
    let manager = Manager::spawn()?;
    let dt = manager.dict::<String, i64>()?;
    let lt = manager.list::<i64>()?;

    // The worker gets the proxies, as Python's Process(target=func, args=(dt, lt)) does.
    let mut worker = Process::spawn_fallible(|| -> agora::Result<()> {
        for i in 0..10 {
            dt.set(&format!("arg{i}"), &(i * i))?;
        }
        lt.extend(11..16)?;
        Ok(())
    })?;
    let status = worker.join()?;
    if !status.success() {
        return Err(format!("the worker failed: {status}").into());
    }

    let outcome = Outcome {
        dict: dt.items()?,
        list: lt.copy()?,
    };
    let entries: Vec<String> = outcome
        .dict
        .iter()
        .map(|(k, v)| format!("'{k}': {v}"))
        .collect();
    println!("{{{}}}", entries.join(", "));
    println!("{:?}", outcome.list);
    Ok(outcome)
}

fn main() -> ExitCode {
    match run().map_err(|e| e.to_string()).and_then(|o| o.check()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("manager_dict_list: {e}");
            ExitCode::FAILURE
        }
    }
}
