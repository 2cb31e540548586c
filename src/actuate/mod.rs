//! Making releases happen in the clusters: the kube-rs implementation of the
//! domain's [`ClusterPort`](crate::domain::ports::ClusterPort) (`kube.rs`)
//! and the loop that observes, plans, carries out and records
//! (`reconcile.rs`). Every decision is the planner's (`domain::plan`).

pub mod kube;
pub mod reconcile;
mod switch;

pub use self::kube::{ClusterSettings, KubeClusters};
pub use reconcile::Driver;
