//! bridge-host binary: see `bridge-host --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    bridge_host::main()
}
