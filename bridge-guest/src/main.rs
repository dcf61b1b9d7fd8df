//! bridge-guest binary: see `bridge-guest --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    bridge_guest::cli::main()
}
