//! [`Event`]: a flag that processes wait for.

use std::marker::PhantomData;
use std::time::Duration;

use crate::client::Client;
use crate::command::Target;
use crate::command::{Args, Cmd};
use crate::error::Result;

use super::wait::{decoders, timeout};

/// An event shared by processes, like Python's `multiprocessing.Manager().Event()`: a flag,
/// clear at first; [`set`](Event::set) wakes every waiter.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let ready = client.event_named("ready")?;
/// if ready.wait_timeout(std::time::Duration::from_secs(5))?.is_none() {
///     eprintln!("not ready after 5 s");
/// }
/// # Ok::<(), agora_client::Error>(())
/// ```
///
/// # Waiting
/// A wait is parked on the manager until the flag is set or its timeout passes; the client
/// does not poll. A waiter that times out or whose process dies is removed at once. Waiters
/// are woken together; nothing is handed to one of them in particular, so their order does
/// not matter.
pub struct Event {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(Event[], "event");

impl Client {
    /// Creates a new, clear event.
    pub fn event(&self) -> Result<Event> {
        let mut args = Args::default();
        args.str("event").opt_str(None);
        Ok(Event::from_id(self, self.create_with(args)?))
    }

    /// The event called `name`, created clear if there is none (get-or-create).
    pub fn event_named(&self, name: &str) -> Result<Event> {
        let mut args = Args::default();
        args.str("event").str(name);
        Ok(Event::from_id(self, self.create_with(args)?))
    }
}

impl Event {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.client.run(self.set_cmd())
    }

    /// [`Event::set`] as a command (`event.set`).
    pub fn set_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "event.set", decoders::unit, |_| Ok(()))
    }

    /// Clears the flag: later waits block until the next `set`.
    pub fn clear(&self) -> Result<()> {
        self.client.run(self.clear_cmd())
    }

    /// [`Event::clear`] as a command (`event.clear`).
    pub fn clear_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "event.clear", decoders::unit, |_| Ok(()))
    }

    /// True when the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        self.client.run(self.is_set_cmd())
    }

    /// [`Event::is_set`] as a command (`event.is_set`).
    pub fn is_set_cmd(&self) -> Cmd<bool> {
        Cmd::object(self.id, "event.is_set", decoders::flag, |_| Ok(()))
    }

    /// Waits until the flag is set (at once if it is).
    pub fn wait(&self) -> Result<()> {
        self.client.run(self.wait_cmd())
    }

    /// [`Event::wait`] as a command (`event.wait`).
    pub fn wait_cmd(&self) -> Cmd<()> {
        Cmd::object(self.id, "event.wait", decoders::unit, |_| Ok(()))
    }

    /// Waits up to `timeout` for the flag: `Some(())` when it is set, `None` when the timeout
    /// passed first (Python's `wait(timeout)` returning `False`). The timeout runs on the
    /// manager.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<()>> {
        self.client.run(self.wait_timeout_cmd(timeout))
    }

    /// [`Event::wait_timeout`] as a command (`event.wait`).
    pub fn wait_timeout_cmd(&self, wait: Duration) -> Cmd<Option<()>> {
        Cmd::object(
            self.id,
            "event.wait",
            decoders::unless_timed_out,
            move |a| {
                timeout(a, Some(wait));
                Ok(())
            },
        )
    }
}
