//! Monitoring: what gatehouse knows about its own health ([`health`]) and what it has done
//! ([`metrics`], [`live`]); trends and alerts come later. Reads other subsystems' state; never
//! changes it.

pub mod health;
pub mod live;
pub mod metrics;
