//! [`Namespace`]: a shared bag of named attributes.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::command::Target;
use crate::command::{decode, Args, Cmd};
use crate::error::Result;

/// A shared namespace: attributes by name, each of its own type, like Python's
/// `Namespace`. The type of each attribute is chosen per call.
///
/// ```no_run
/// # let client = agora_client::Client::from_env()?;
/// let config = client.namespace_named("config")?;
/// config.set("workers", &4)?;
/// config.set("mode", "fast")?;
/// let workers: Option<u32> = config.get("workers")?;
/// # Ok::<(), agora_client::Error>(())
/// ```
pub struct Namespace {
    client: Client,
    id: Target,
    marker: PhantomData<()>,
}

super::proxy_common!(Namespace[], "namespace");

impl Client {
    /// Creates a new, empty shared namespace.
    pub fn namespace(&self) -> Result<Namespace> {
        let mut args = Args::default();
        args.str("namespace").opt_str(None);
        Ok(Namespace::from_id(self, self.create_with(args)?))
    }

    /// The namespace called `name`, created empty if there is none (get-or-create).
    pub fn namespace_named(&self, name: &str) -> Result<Namespace> {
        let mut args = Args::default();
        args.str("namespace").str(name);
        Ok(Namespace::from_id(self, self.create_with(args)?))
    }
}

impl Namespace {
    /// The attribute `name`, `None` when it is not set.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.client.run(self.get_cmd(name))
    }

    /// [`Namespace::get`] as a command (`namespace.getattr`).
    pub fn get_cmd<T: DeserializeOwned>(&self, name: &str) -> Cmd<Option<T>> {
        Cmd::object(
            self.id,
            "namespace.getattr",
            decode::unless_attribute_error,
            |a| {
                a.str(name);
                Ok(())
            },
        )
    }

    /// Sets the attribute `name`.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.client.run(self.set_cmd(name, value))
    }

    /// [`Namespace::set`] as a command (`namespace.setattr`).
    pub fn set_cmd<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Cmd<()> {
        Cmd::object(self.id, "namespace.setattr", decode::unit, |a| {
            a.str(name).value(value).map(drop)
        })
    }

    /// Removes the attribute `name`, as `del ns.name` in Python; returns whether it was set
    /// (Python's `AttributeError` is `false`).
    pub fn del(&self, name: &str) -> Result<bool> {
        self.client.run(self.del_cmd(name))
    }

    /// [`Namespace::del`] as a command (`namespace.delattr`).
    pub fn del_cmd(&self, name: &str) -> Cmd<bool> {
        Cmd::object(self.id, "namespace.delattr", decode::found_attribute, |a| {
            a.str(name);
            Ok(())
        })
    }

    /// Every attribute, in the order they were first set. When the attributes have different
    /// types, use a `T` that decodes from any value, such as `rmpv::Value` (with rmpv's
    /// `with-serde` feature) or an untagged enum.
    pub fn items<T: DeserializeOwned>(&self) -> Result<Vec<(String, T)>> {
        self.client.run(self.items_cmd())
    }

    /// [`Namespace::items`] as a command (`namespace.items`).
    pub fn items_cmd<T: DeserializeOwned>(&self) -> Cmd<Vec<(String, T)>> {
        Cmd::object(
            self.id,
            "namespace.items",
            super::dict::decode_entries,
            |_| Ok(()),
        )
    }
}
