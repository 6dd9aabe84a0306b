//! The Bot Framework protocol: activities, inbound authentication, the bot's own token and the
//! Bot Connector, invoke responses and OAuth cards. Nothing here knows about security cases.

pub mod activity;
pub mod auth;
pub mod connector;
pub mod inbound;
pub mod invoke;
pub mod invoke_request;
pub mod keys;
pub mod private;
pub mod service_url;
