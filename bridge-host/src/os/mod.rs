//! The operating system: the privilege drop, systemd's notification socket, the clock,
//! descriptor passing to and from the privileged monitor, and the crate's only unsafe
//! code (`sys`: fork, adopting received descriptors).

pub mod clock;
pub mod fdpass;
pub mod notify;
pub mod privileges;
pub mod sys;
