//! Child processes that never outlive the test binary, and waiting for one
//! to exit.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// If the test process dies, so does the child (no stray servers).
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Run `make` on a thread that lives as long as the test process, so
/// PDEATHSIG ties the servers it spawns to the process, not to a test thread
/// (PDEATHSIG fires when the spawning *thread* ends).
pub fn on_process_thread<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(make()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// Send `sig` to `child`; it must still exist.
pub fn signal(child: &Child, sig: libc::c_int) {
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// The child's exit status once it has exited, or `None` after `deadline`.
pub async fn exited_within(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM, then SIGKILL if it has not exited after `grace` (blocking: for
/// `Drop`). nginx's master stops its workers on SIGTERM; a SIGKILL would
/// orphan them.
pub fn terminate(child: &mut Child, grace: Duration) {
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
