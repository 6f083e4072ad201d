//! A toy object for the core's own tests: permits that takers wait for, held per connection.
//! Shared by the unit tests and the property test, so both drive the core through the same
//! semantics.

use super::*;

/// Permits that takers wait for; what a taker holds is counted per connection.
pub(super) struct Permits {
    /// Permits nobody holds.
    pub(super) free: u64,
    /// Who holds the others (grants in flight included).
    pub(super) held: HeldBy,
}

impl Semantics for Permits {
    type Wait = ();

    fn offer(&mut self, _line: LineId, _wait: &mut (), to: &Holder) -> Offer {
        if self.free == 0 {
            return Offer::Wait;
        }
        self.free -= 1;
        self.held.add(to.as_caller(), 1);
        Offer::Grant(Ok(Grant::ACQUIRED))
    }

    fn give_back(&mut self, _grant: Grant, to: &Holder) {
        self.free += self.held.remove(to.session, 1);
    }

    fn leave(&mut self, _line: LineId, _wait: (), why: Leave) -> Left<()> {
        match why {
            Leave::Expired => Left::Answer(Ok(Grant::NotAcquired)),
            Leave::Abandoned => Left::Gone,
        }
    }

    fn release_dead(&mut self, session: SessionId) -> bool {
        let n = self.held.take(session);
        self.free += n;
        n > 0
    }

    fn retire(&mut self) {
        self.held.clear();
    }

    fn holding(&self) -> Vec<HeldInfo> {
        counted(Some(&self.held))
    }

    fn waits_for(&self, _line: LineId, _wait: &()) -> String {
        "a permit".to_owned()
    }
}
