//! The operating system: the privilege drop, systemd's notification socket, the clock.

pub mod clock;
pub mod notify;
pub mod privileges;
