//! Waiting for a `bulkhead serve --port 0` child to say where it listens: the one way tests and benchmarks learn
//! the address of a server they started.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// The line `bulkhead serve` prints on stdout once its socket is bound and its signal handlers are installed.
pub const LISTENING: &str = "listening on http://";

/// Reads the piped stdout of a `bulkhead serve` child until its `listening on http://ADDR` line and returns `ADDR`
/// (`host:port`); stdout keeps being drained afterwards so that the server never blocks on a full pipe. The child
/// is killed when it exits first or says nothing within `timeout`: the error says which.
pub fn wait_listening(child: &mut Child, timeout: Duration) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("the server's stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split(LISTENING).nth(1) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(addr) => Ok(addr),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            Err(format!("the server exited before listening ({status})"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the server did not listen within {} s", timeout.as_secs()))
        }
    }
}
