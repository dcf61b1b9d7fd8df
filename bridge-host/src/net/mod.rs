//! Sockets: the listeners sandboxes connect to, and the hang-up watch on a connection.

pub mod dirs;
pub mod hangup;
pub mod listen;
