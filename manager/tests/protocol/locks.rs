//! Handing a lock on (PROTOCOL.md section 4.1, owner death): a grant that cannot be
//! delivered is no death of an owner.

use agora_proto::testing::dec;
use rmpv::Value;

use crate::support::*;

#[test]
fn a_grant_that_cannot_be_delivered_passes_on_without_an_owner_died_notice() {
    for kind in [
        "lock",
        "rlock",
        "semaphore",
        "bounded_semaphore",
        "condition",
    ] {
        let server = TestServer::start();
        let (mut holder, mut gone, mut next) = (server.client(), server.client(), server.client());
        let id = Value::from(holder.create(kind, None, vec![]));
        let (acquire, release) = (format!("{kind}.acquire"), format!("{kind}.release"));
        holder.ok(&acquire, vec![id.clone()]);
        gone.park(&acquire, vec![id.clone()]);
        gone.stop_reading();
        let waiting = next.park(&acquire, vec![id.clone()]);
        // The lock is granted to `gone`, whose reply cannot be written: it goes to `next`, and
        // since `gone` never learnt it held the lock, nobody died holding it.
        holder.ok(&release, vec![id.clone()]);
        let answer = next.response();
        assert_eq!(answer.msgid, waiting);
        let code = dec(&answer.result.unwrap_or_else(|e| panic!("{kind}: {e:?}")));
        assert_eq!(code, Value::from(1), "{kind}: a spurious owner-died notice");
    }
}

#[test]
fn fencing_tokens_grow_with_every_grant_and_belong_to_the_holder() {
    for kind in ["lock", "rlock"] {
        let server = TestServer::start();
        let (mut a, mut b) = (server.client(), server.client());
        let id = Value::from(a.create(kind, None, vec![]));
        let (acquire, release, token) = (
            format!("{kind}.acquire"),
            format!("{kind}.release"),
            format!("{kind}.token"),
        );
        let err = a.fail(&token, vec![id.clone()]);
        assert_eq!(err, "RuntimeError", "{kind}");
        let mut last = 0;
        for round in 0..4 {
            let c = if round % 2 == 0 { &mut a } else { &mut b };
            c.ok(&acquire, vec![id.clone()]);
            let got = c.ok(&token, vec![id.clone()]).as_u64().expect("an int");
            assert!(got > last, "{kind}: {got} after {last}");
            last = got;
            c.ok(&release, vec![id.clone()]);
        }
        a.ok(&acquire, vec![id.clone()]);
        let err = b.fail(&token, vec![id.clone()]);
        assert_eq!(err, "RuntimeError", "{kind}");
        // Another thread of the holder's connection is not the holder either.
        let err = a.fail(&token, vec![id.clone(), Value::from(7)]);
        assert_eq!(err, "RuntimeError", "{kind}");
    }
}
