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

/// A port that is free now, for the scheduler to bind once it starts.
///
/// It is released before the scheduler binds it, so something else could
/// take it in between. The likeliest taker is this launch itself: its
/// servers and workers bind port 0 and connect out, and the OS hands both
/// ephemeral ports, the just-released one among them (seen: a Python
/// scheduler, slow to start, found its port taken). So the port is chosen
/// below the ephemeral range, where only an explicit bind lands; should
/// that fail, the scheduler fails to bind and the launch fails loudly.
fn free_port() -> std::io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 100 {
        let span = u32::from(ephemeral_low - LOWEST);
        // Spread launches that run at once over the span.
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for step in 0..span.min(1000) {
            let port = LOWEST + ((start + step * 7919) % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr().map(|addr| addr.port())
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
        match free_port() {
            Ok(port) => port,
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
