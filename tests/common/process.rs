//! A real `tlsedge` process for tests that need one (signals, exit codes, its memory), with
//! its output lines on a channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process whose stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr read line by line.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tlsedge");
        let (tx, lines) = mpsc::channel();
        let pid = child.id();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let echo = std::env::var_os("TLSEDGE_TEST_ECHO").is_some();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{pid}] {line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Self { child, lines }
    }

    /// The first output line containing `needle`.
    pub fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + super::PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no output line with {needle:?}"),
            }
        }
    }

    /// Sends signal `name` (e.g. `-TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a JSON log field such as `"listener.addr":"127.0.0.1:1234"`.
/// The string value of `field` in a JSON log line.
pub fn json_field(line: &str, field: &str) -> String {
    let key = format!("\"{field}\":\"");
    let start = line.find(&key).map(|i| i + key.len()).expect("field");
    line[start..].split('"').next().unwrap().to_owned()
}
