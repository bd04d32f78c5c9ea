//! Store adapters: in-memory (the embedded default) and Upstash Redis over REST (production), and the
//! decorators that meter and watch them. Their error is the port's (`ports::StoreError`), so the
//! engine and the routes never import an adapter.

pub mod memory;
pub(crate) mod metered;
pub mod upstash;
pub(crate) mod watch;
