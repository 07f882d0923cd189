//! The release binaries as separate processes.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A child process, interrupted (SIGINT: drain and flush) when dropped.
pub struct Process(Child);

impl Process {
    pub fn start<S: AsRef<OsStr>>(program: &Path, args: &[S], env: &[(&str, String)]) -> Process {
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Process::spawn(&mut command, program)
    }

    pub fn spawn(command: &mut Command, program: &Path) -> Process {
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));
        Process(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Ctrl-C, then waits for the exit: the services drain and flush.
    pub fn stop(self) -> std::process::ExitStatus {
        self.signal("INT")
    }

    /// Sends `signal` (a name such as TERM), then waits for the exit.
    pub fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        send(&mut self.0, signal)
    }

    /// Sends `signal` and returns at once.
    pub fn notify(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status();
    }

    /// Waits for the exit, without sending anything.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.0.wait().expect("the process was started")
    }
}

fn send(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    child.wait().expect("the process was started")
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            send(&mut self.0, "INT");
        }
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A binary of the workspace, beside the `horoscoper` one. `cargo test`
/// builds only the binaries of packages that have integration tests, so
/// `just test` builds the workspace first.
pub fn binary(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_horoscoper")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (with --release for a release test run) first; `just test` does",
        path.display()
    );
    path
}

/// Waits until `addr` accepts TCP connections.
pub async fn reachable(addr: std::net::SocketAddr, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} at {addr} never accepted connections");
}
