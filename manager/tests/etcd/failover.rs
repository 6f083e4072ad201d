//! A client of several managers serving one etcd store moves to the next when its manager dies,
//! and keeps every proxy: the objects are the store's, and so is the run.

use agora_client::{Addresses, Client};

use crate::harness::{key, two};

#[test]
fn a_client_moves_to_the_next_manager_and_keeps_its_proxies() {
    let Some((_etcd, mut a, b)) = two("client-moves", &[]) else {
        return;
    };
    let both = Addresses::new([a.address.clone(), b.address.clone()]).expect("two addresses");
    let client = Client::connect_any(&both, &key()).expect("connect");
    assert_eq!(
        client.address(),
        &a.address,
        "the first address that answers"
    );

    // An unnamed object and a named one, both made through A.
    let scratch = client.dict::<String, i64>().unwrap();
    scratch.set("x", &1).unwrap();
    let counter = client.value_named::<i64>("counter", &0).unwrap();
    counter.set(&5).unwrap();

    a.kill();
    // The call in flight when the manager went (or the first after) fails, never re-sent;
    // the next goes to B, on the same run, and the proxies made through A work there.
    let first = scratch.get("x");
    let value = match first {
        Ok(v) => v,
        Err(e) => {
            assert!(e.is_manager_gone(), "{e}");
            scratch.get("x").expect("through B")
        }
    };
    assert_eq!(value, Some(1));
    assert_eq!(client.address(), &b.address);
    assert_eq!(counter.fetch_add(1).unwrap(), 5);
    assert_eq!(
        b.client()
            .value_named::<i64>("counter", &0)
            .unwrap()
            .get()
            .unwrap(),
        6
    );
}

#[test]
fn managers_keep_their_leases_and_holdings_through_the_loss_of_the_etcd_leader() {
    use crate::harness::{available, fresh_prefix, Etcd, Manager};
    use agora_client::Acquired;
    use std::time::Duration;
    if !available() {
        return;
    }
    let mut etcd = Etcd::cluster(3);
    let store = etcd.store(&fresh_prefix("lease-kept"));
    // A short lease: a keep-alive that hangs on the dead leader must not cost it.
    let lease = ["--store-lease-seconds", "2"];
    let (a, b) = (
        Manager::start(&store, &lease),
        Manager::start(&store, &lease),
    );
    let ca = a.client();
    let lock = ca.lock_named("l").unwrap();
    let guard = lock.acquire().unwrap();
    let leader = etcd.leader().expect("a leader");
    etcd.kill_member(leader);
    std::thread::sleep(Duration::from_secs(6));
    let cb = b.client();
    let other = cb.lock_named("l").unwrap();
    assert!(
        other.try_acquire().unwrap().is_none(),
        "the lock is still held through a: neither lease expired, neither manager stopped"
    );
    guard.unlock().unwrap();
    let got = other
        .acquire_raw(true, Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(got, Acquired::Yes, "released, not lost with a lease");
}
