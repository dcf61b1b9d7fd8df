//! The operating system: the privilege drop and systemd's notification socket.

pub mod notify;
pub mod privileges;
