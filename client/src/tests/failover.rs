//! A client of several addresses: it connects to the first that answers, moves to the next
//! when its connection breaks, and names every address when none answers.

use std::path::Path;

use super::fake::{FakeManager, AUTHKEY};
use super::whoami;
use crate::{Address, Addresses, Client, Error, ENV_ADDRESS};

fn list(addresses: &[&Address]) -> Addresses {
    Addresses::new(addresses.iter().map(|&a| a.clone())).unwrap()
}

fn absent(dir: &Path, name: &str) -> Address {
    Address::Unix(dir.join(name))
}

/// Two fake managers report the same run, as managers sharing a store do: when the first
/// one's connection breaks, the call in flight fails (never sent again), the next call goes
/// to the second, which takes over the live proxies (`incref`), and they keep working there;
/// the next break goes round to the first again.
#[test]
fn a_broken_connection_moves_to_the_next_manager_of_the_same_run() {
    let (a, b) = (FakeManager::start(), FakeManager::start());
    let on_b = Client::connect(&b.address, AUTHKEY).unwrap();
    let b_list = on_b.list::<i64>().unwrap();
    b_list.append(&5).unwrap();
    b_list.append(&6).unwrap();

    let both = list(&[&a.address, &b.address]);
    let c = Client::connect_any(&both, AUTHKEY).unwrap();
    assert_eq!(c.address(), &a.address);
    let kept = c.list::<i64>().unwrap();
    let err = c.call::<_, ()>("test.close", &()).unwrap_err();
    assert!(err.is_disconnected(), "{err}");

    // The same id, now B's object: the store they share would make it the same one.
    assert_eq!(kept.len().unwrap(), 2);
    assert_eq!(c.address(), &b.address);
    assert_eq!(c.addresses(), &both);
    let taken_over = b.logged_by(2);
    assert_eq!(taken_over, ["2: incref 0"]);

    assert!(c.call::<_, ()>("test.close", &()).is_err());
    assert_eq!(whoami(&c), 2, "back to A, on its second connection");
    assert_eq!(c.address(), &a.address);
    assert_eq!(kept.len().unwrap(), 0);
}

/// Connecting skips the addresses where no manager answers; when none does, the error names
/// each address and why, in the order tried.
#[test]
fn connecting_tries_each_address_and_names_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeManager::start();
    let (x, y) = (absent(dir.path(), "x.sock"), absent(dir.path(), "y.sock"));
    let c = Client::connect_any(&list(&[&x, &m.address, &y]), AUTHKEY).unwrap();
    assert_eq!(c.address(), &m.address);
    c.ping().unwrap();

    let err = Client::connect_any(&list(&[&x, &y]), AUTHKEY).unwrap_err();
    let Error::NoManager { failures } = &err else {
        panic!("not NoManager: {err:?}");
    };
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|e| matches!(e, Error::Connect { .. })));
    let text = err.to_string();
    let (at_x, at_y) = (text.find("x.sock"), text.find("y.sock"));
    assert!(at_x.is_some() && at_y.is_some() && at_x < at_y, "{text}");
    assert!(err.is_manager_gone());

    // A single address keeps its own error.
    let one = Client::connect_any(&list(&[&x]), AUTHKEY).unwrap_err();
    assert!(matches!(one, Error::Connect { .. }), "{one}");
    // The authkey is checked once, not at every address.
    let empty = Client::connect_any(&list(&[&x, &y]), b"").unwrap_err();
    assert!(matches!(empty, Error::EmptyAuthkey { .. }), "{empty}");
}

/// A reconnection tries the address after the one that failed first, skips those where no
/// manager answers and goes round to the start; a refused authkey is one more failure named.
#[test]
fn a_reconnection_skips_addresses_that_do_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeManager::start();
    let x = absent(dir.path(), "x.sock");
    let c = Client::connect_any(&list(&[&m.address, &x]), AUTHKEY).unwrap();
    // The fake keeps listening: a wrong key makes it refuse the new connection instead.
    let wrong = Client::connect_any(&list(&[&m.address, &x]), b"wrong").unwrap_err();
    assert!(matches!(wrong, Error::NoManager { .. }), "{wrong}");
    assert!(wrong.to_string().contains("refused the authkey"), "{wrong}");
    assert!(wrong.to_string().contains("x.sock"), "{wrong}");
    assert!(c.call::<_, ()>("test.close", &()).is_err());
    // x first (the one after the address that failed), then round to the fake.
    c.ping().unwrap();
    assert_eq!(c.address(), &m.address);
}

/// `AGORA_ADDRESS` may hold a list; a bad one says which entry is wrong and names the
/// variable.
#[test]
fn the_environment_takes_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let m = FakeManager::start();
    let x = absent(dir.path(), "x.sock");
    let key = hex::encode(AUTHKEY);
    let c = Client::from_env_values(Ok(format!("{x} , {}", m.address)), Ok(key.clone()));
    assert_eq!(c.unwrap().address(), &m.address);
    let err = Client::from_env_values(Ok(format!("{x},,{}", m.address)), Ok(key)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Env {
                var: ENV_ADDRESS,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("entry 2 of the list is empty"), "{text}");
}

/// A forked child opens its own connection where the parent is, not at the next address:
/// the parent's manager did not fail.
#[test]
fn a_forked_child_stays_on_the_parents_manager() {
    let (a, b) = (FakeManager::start(), FakeManager::start());
    let c = Client::connect_any(&list(&[&a.address, &b.address]), AUTHKEY).unwrap();
    assert_eq!(whoami(&c), 1);
    let code = super::in_forked_child(|| {
        let on_a = c.address() == &a.address;
        match c.call::<_, u64>("test.whoami", &()) {
            Ok(2) if on_a && c.address() == &a.address => 0,
            Ok(_) => 1,
            Err(_) => 2,
        }
    });
    assert_eq!(code, 0);
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}
