//! `sluice`: one binary.
//!
//! - `sluice run PROJECT.xml [--var NAME=VALUE ...] [--window cq/w ...] [--badevents FILE]`:
//!   runs a project's file publishers to the end and prints the final rows of its windows.
//! - `sluice server ...` and `sluice client ...`: see `sluice server --help`, `sluice client --help`.

mod run;

use std::process::ExitCode;

/// mimalloc, set up by [`sluice_alloc`] (why: see there).
#[global_allocator]
static GLOBAL: sluice_alloc::MiMalloc = sluice_alloc::MiMalloc;

fn main() -> ExitCode {
    sluice_alloc::keep_freed_memory();
    sluice_alloc::small_pages_only();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => run::main(&args[2..]),
        Some("server") => sluice_server::main(&args[2..]),
        Some("client") => sluice_client::main(&args[2..]),
        Some("-V") | Some("--version") | Some("version") => {
            println!("sluice {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("-h") | Some("--help") | Some("help") | None => {
            println!(
                "sluice {}: a highly available event stream processing server\n\n\
                 usage:\n  sluice run PROJECT.xml [--var NAME=VALUE ...] [--window cq/w ...] [--badevents FILE]\n\
                 \n  sluice server [--http PORT] [--pubsub PORT] [--model FILE] [--badevents FILE] ...\n\
                 \n  sluice client --url URL [--put [file://PATH]] [--post [file://PATH]] [--delete]\n\
                 \n  run 'sluice <command> --help' for the options of a command",
                env!("CARGO_PKG_VERSION")
            );
            if args.len() > 1 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Some(other) => {
            eprintln!("sluice: unknown command '{other}' (commands: run, server, client; see 'sluice --help')");
            ExitCode::from(2)
        }
    }
}
