//! The planner, without a server or a cluster: golden files for a table of
//! situations, and properties over random ones.

#![allow(unreachable_pub)]

mod after;
mod golden;
mod properties;
mod world;
