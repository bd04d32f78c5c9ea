//! Store adapters: in-memory (the embedded default) and Upstash Redis over REST (production). Their
//! error is the domain's (`domain::errors::StoreError`), so the ports and the engine never import an
//! adapter.

pub mod memory;
pub mod metered;
pub mod upstash;
pub mod watch;
