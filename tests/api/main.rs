//! Integration tests: the real application on a random port against local fake servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[macro_use]
mod backends;

mod audit;
mod auth;
mod bulk;
mod cards;
mod cases;
mod cli;
mod connector;
mod escalation;
mod forward;
mod graph;
mod helpers;
mod history;
mod hostile;
mod kill;
mod notifications;
mod private;
mod revoke;
mod runner;
mod server;
mod signin;
mod store;
