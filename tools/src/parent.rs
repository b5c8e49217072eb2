//! Processes that die with the process that started them, whatever kills
//! it (a panic, SIGKILL, a harness timeout), so no test or launcher leaves
//! a cluster spinning behind it.
//!
//! The parent names itself in the child's environment
//! ([`DIE_WITH_PARENT`], set by [`bind`]); the child calls [`honour`]
//! first thing, which asks the kernel for SIGKILL when its parent dies
//! (Linux's `PR_SET_PDEATHSIG`, through `rustix`'s safe wrapper, since
//! the workspace forbids `unsafe`) and then checks that its parent is
//! still the process named, which closes the window in which the parent
//! died before the request. A program that does not call [`honour`] (any
//! program `pslite-launch` runs) is reached through [`exec_bound`]: the
//! tool starts itself, honours the variable, and then replaces itself
//! with the program, which keeps the death signal across `exec`.
//!
//! Why not a watched pipe: that needs every child to read it, and a
//! launcher runs programs it does not know. (`pslite-bench --processes`
//! and the `job` example do watch their stdin, as a second line.)
//!
//! The kernel sends the signal when the *thread* that started the child
//! ends, so a child must be started from a thread that lives at least as
//! long as the child should: `main`, or the test that waits for it.
//! Elsewhere than Linux and FreeBSD, [`honour`] only removes the variable.

use std::ffi::OsString;
use std::process::Command;

/// The environment variable that names the process a child dies with.
pub const DIE_WITH_PARENT: &str = "PSLITE_DIE_WITH_PARENT";

/// Makes `command`'s process die with this one, if it calls [`honour`].
pub fn bind(command: &mut Command) -> &mut Command {
    command.env(DIE_WITH_PARENT, std::process::id().to_string())
}

/// Honours [`DIE_WITH_PARENT`] if it is set: from now on this process
/// dies with the process it names, and exits at once if that one is
/// already gone. The variable is removed, so the children of this process
/// do not inherit a parent that is not theirs. Call it at the top of
/// `main`, before any thread starts.
pub fn honour() -> Result<(), String> {
    let Some(value) = std::env::var_os(DIE_WITH_PARENT) else {
        return Ok(());
    };
    // Edition 2021: safe; before any other thread exists, also sound.
    std::env::remove_var(DIE_WITH_PARENT);
    let parent: u32 = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{DIE_WITH_PARENT}={value:?} is not a process id"))?;
    die_with(parent)
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn die_with(parent: u32) -> Result<(), String> {
    use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};
    set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|error| format!("cannot ask for a parent-death signal: {error}"))?;
    // The parent may have died before the request: then it names another.
    if Pid::as_raw(getppid()) as u32 != parent {
        eprintln!("the process that started this one (pid {parent}) is gone; exiting");
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn die_with(_parent: u32) -> Result<(), String> {
    Ok(())
}

/// The argument that makes a tool replace itself with the program after
/// it (see [`exec_bound`]).
pub const EXEC_ARG: &str = "--exec-bound";

/// A command that runs `program` with `args` bound to this process: it
/// starts this executable with [`EXEC_ARG`], which honours the binding
/// and then execs the program (see [`exec_if_asked`]).
pub fn exec_bound(program: &OsString, args: &[OsString]) -> std::io::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(EXEC_ARG).arg(program).args(args);
    bind(&mut command);
    Ok(command)
}

/// If this process was started by [`exec_bound`], honours the binding
/// and replaces itself with the program, never returning; otherwise does
/// nothing. Call it at the top of `main`.
pub fn exec_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(EXEC_ARG.as_ref()) {
        return;
    }
    let fail = |what: String| -> ! {
        eprintln!("{EXEC_ARG}: {what}");
        std::process::exit(127);
    };
    if let Err(error) = honour() {
        fail(error);
    }
    let Some(program) = args.next() else { fail("no program given".to_owned()) };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = Command::new(&program).args(args).exec();
        fail(format!("cannot run {program:?}: {error}"));
    }
    #[cfg(not(unix))]
    {
        let status = Command::new(&program).args(args).status().unwrap_or_else(|e| fail(format!("{program:?}: {e}")));
        std::process::exit(status.code().unwrap_or(1));
    }
}
