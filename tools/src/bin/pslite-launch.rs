//! Starts a pslite cluster as separate processes on this machine: one
//! scheduler, `--servers` servers and `--workers` workers, each running the
//! given command with ps-lite's `DMLC_*` environment (what dmlc-tracker's
//! local mode does). Exits 0 only if every process does.
//!
//! ```text
//! pslite-launch --servers 2 --workers 4 -- target/release/examples/train --epochs 2
//! ```
//!
//! The processes die with the launcher, however it ends (Ctrl-C, SIGKILL):
//! each is bound to it by a parent-death signal ([`pslite_tools::parent`]),
//! and so is the launcher itself to a test that starts it bound.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, ExitCode};

use clap::Parser;
use pslite_tools::parent;

#[derive(Parser, Debug)]
#[command(version, about = "Launch a local pslite cluster of processes with the DMLC_* environment")]
struct Args {
    /// Number of server processes.
    #[arg(long, short = 's', default_value_t = 1)]
    servers: u32,
    /// Number of worker processes.
    #[arg(long, short = 'w', default_value_t = 1)]
    workers: u32,
    /// Scheduler port; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Extra `NAME=VALUE` environment for every process (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    envs: Vec<(String, String)>,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    Ok((name.to_owned(), value.to_owned()))
}

fn main() -> ExitCode {
    // A child of ours: becomes the program, bound to us (never returns).
    parent::exec_if_asked();
    if let Err(error) = parent::honour() {
        eprintln!("pslite-launch: {error}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    let port = if args.port != 0 {
        args.port
    } else {
        // Ask the OS for a free port, then release it for the scheduler.
        // Another process could take it in between; the scheduler then
        // fails to bind and the launch fails loudly, never silently.
        match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(error) => {
                eprintln!("pslite-launch: no free port: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut roles = vec![("scheduler", 0u32)];
    roles.extend((0..args.servers).map(|i| ("server", i)));
    roles.extend((0..args.workers).map(|i| ("worker", i)));
    let mut children: Vec<(String, Child)> = Vec::new();
    let program: OsString = args.command[0].clone().into();
    let program_args: Vec<OsString> = args.command[1..].iter().map(OsString::from).collect();
    for (role, index) in roles {
        let mut command = match parent::exec_bound(&program, &program_args) {
            Ok(command) => command,
            Err(error) => {
                eprintln!("pslite-launch: cannot find this executable to start {:?}: {error}", args.command[0]);
                return ExitCode::FAILURE;
            }
        };
        command
            .env("DMLC_ROLE", role)
            .env("DMLC_PS_ROOT_URI", "127.0.0.1")
            .env("DMLC_PS_ROOT_PORT", port.to_string())
            .env("DMLC_NUM_SERVER", args.servers.to_string())
            .env("DMLC_NUM_WORKER", args.workers.to_string())
            .env("DMLC_NODE_HOST", "127.0.0.1");
        for (name, value) in &args.envs {
            command.env(name, value);
        }
        match command.spawn() {
            Ok(child) => children.push((format!("{role} {index}"), child)),
            Err(error) => {
                eprintln!("pslite-launch: cannot start {:?}: {error}", args.command[0]);
                for (_, child) in &mut children {
                    let _ = child.kill();
                }
                return ExitCode::FAILURE;
            }
        }
    }
    // Poll every child so the first failure stops the rest instead of
    // leaving them waiting for a peer that is gone.
    let mut failed = false;
    while !children.is_empty() {
        let mut index = 0;
        while index < children.len() {
            match children[index].1.try_wait() {
                Ok(None) => index += 1,
                Ok(Some(status)) => {
                    let (name, _) = children.swap_remove(index);
                    if !status.success() {
                        eprintln!("pslite-launch: {name} exited with {status}; stopping the others");
                        failed = true;
                    }
                }
                Err(error) => {
                    let (name, _) = children.swap_remove(index);
                    eprintln!("pslite-launch: waiting for {name}: {error}");
                    failed = true;
                }
            }
        }
        if failed {
            for (_, child) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            break;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
