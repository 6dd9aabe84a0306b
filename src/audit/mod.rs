//! Teams audit records: the model, the detection rules, the signed push endpoint's signature
//! check and the Management Activity API poller.

pub mod detection;
pub mod poller;
pub mod record;
pub mod signature;
