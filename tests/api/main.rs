//! Integration tests: the real server on 127.0.0.1:0 with a fresh data
//! directory, driven by a real tonic client and a real HTTP client.

#![allow(unreachable_pub)]

mod abuse;
mod auth;
mod binary;
mod bursts;
mod conditions;
mod console;
mod cors;
mod crash;
mod create_grpc;
mod create_rest;
mod driver;
mod driver_processes;
mod dry_run;
mod errors;
mod exact_roundtrip;
mod finished_status;
mod helpers;
mod lifecycle;
mod limits;
mod list;
mod metric_checks;
mod metrics;
mod openapi;
mod ownership;
mod postgres_tls;
mod prometheus;
mod protocols;
mod quiet;
mod rate_limits;
mod real_cluster;
mod reload;
mod replicas;
mod rest_watch;
mod retries;
mod revision_order;
mod roundtrip;
mod shared_limits;
mod signing;
mod strategy;
mod strategy_processes;
mod strict_input;
mod tls;
mod traffic;
mod transcoding;
mod validation;
mod watch;
mod watch_caches;
