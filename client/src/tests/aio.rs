//! The async client against the fake manager: replies matched by msgid whatever their order,
//! dropped calls whose replies are read and dropped, and the call deadline.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::fake::{FakeManager, AUTHKEY};
use crate::aio::AsyncClient;
use crate::{Client, Cmd, ConnectOptions, Error};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn client(fake: &FakeManager, options: ConnectOptions) -> AsyncClient {
    let address = fake.address.clone();
    let blocking =
        tokio::task::spawn_blocking(move || Client::connect_with(&address, AUTHKEY, &options))
            .await
            .unwrap()
            .unwrap();
    AsyncClient::from_client(blocking).await.unwrap()
}

fn sleep_then(ms: u64, x: i64) -> Cmd<i64> {
    Cmd::typed("test.sleep", &(ms, x))
}

#[test]
fn replies_reach_their_tasks_in_any_order() {
    let fake = FakeManager::start();
    runtime().block_on(async {
        let c = client(&fake, ConnectOptions::default()).await;
        let slow = tokio::spawn(c.run(sleep_then(100, 1)));
        let fast: Vec<_> = (0..50)
            .map(|i| tokio::spawn(c.run(Cmd::<i64>::typed("test.echo", &(i,)))))
            .collect();
        for (i, f) in fast.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().unwrap(), i as i64);
        }
        assert!(!slow.is_finished(), "the slow reply was overtaken");
        assert_eq!(slow.await.unwrap().unwrap(), 1);
    });
}

#[test]
fn a_dropped_call_leaves_the_connection_serving() {
    let fake = FakeManager::start();
    runtime().block_on(async {
        let c = client(&fake, ConnectOptions::default()).await;
        let dropped = tokio::time::timeout(Duration::from_millis(10), c.run(sleep_then(50, 1)));
        assert!(dropped.await.is_err());
        // Its reply comes and is dropped; the next calls get their own.
        tokio::time::sleep(Duration::from_millis(80)).await;
        for i in 0..5 {
            let echoed = c.run(Cmd::<i64>::typed("test.echo", &(i,))).await;
            assert_eq!(echoed.unwrap(), i);
        }
    });
}

#[test]
fn a_call_past_its_deadline_closes_the_connection_and_the_next_call_reconnects() {
    let fake = FakeManager::start();
    runtime().block_on(async {
        let options = ConnectOptions::default().call_timeout(Some(Duration::from_millis(50)));
        let c = client(&fake, options).await;
        let err = c.run(sleep_then(2_000, 1)).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        let before = fake.accepted.load(Ordering::SeqCst);
        assert_eq!(
            c.run(Cmd::<i64>::typed("test.echo", &(7,))).await.unwrap(),
            7
        );
        assert!(
            fake.accepted.load(Ordering::SeqCst) > before,
            "a new connection"
        );
    });
}
