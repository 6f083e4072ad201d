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
