//! Monitoring: what gatehouse knows about its own health ([`health`]), what it has done
//! ([`metrics`], [`live`]), and what that means: recommendations ([`advisor`]) and alerts
//! ([`alerts`]) judged on snapshots of recent traffic ([`readings`], [`snapshot`]), on a schedule
//! ([`schedule`]). Reads other subsystems' state; never changes it.

pub mod advisor;
pub mod alerts;
mod exposition;
pub mod health;
pub mod live;
pub mod metrics;
pub mod readings;
pub mod schedule;
pub mod snapshot;
pub mod totals;
