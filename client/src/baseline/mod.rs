//! The two baselines every comparison uses, beside the manager's own lock: a lock for the
//! threads of one process, and an `flock(2)` file lock, the way the tutorials guard a JSON
//! "ticket database". One small trait covers all three locks, so a workload is written once
//! and run on each.
