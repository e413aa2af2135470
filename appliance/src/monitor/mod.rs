//! Monitoring: what gatehouse knows about its own health (and, as it grows, metrics, trends and
//! alerts). Reads other subsystems' state; never changes it.

pub mod health;
