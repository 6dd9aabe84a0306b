//! chatwarden: a Microsoft Teams bot that lets a security team remove malicious external chats
//! from their users' Teams, on the approval of an authorised admin.
//!
//! See ARCHITECTURE.md for the module map and the invariants.

pub mod alerts;
pub mod approvers;
pub mod audit;
pub mod bot;
pub mod botframework;
pub mod cards;
pub mod cases;
pub mod cli;
pub mod commands;
pub mod config;
pub mod defender;
pub mod entra;
pub mod escalation;
pub mod execution;
pub mod graph;
pub mod history;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod notifications;
pub mod outbound;
pub mod ratelimit;
pub mod standins;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod workflow;
