//! Progress on stderr while measuring: a redrawn bar on a terminal, one line per phase otherwise (logs, CI).

use std::io::{IsTerminal, Write};

/// Progress of the current unit and phase.
pub struct Progress {
    command: &'static str,
    tty: bool,
    unit: String,
    phase: String,
    drawn: bool,
}

impl Progress {
    /// Progress of `command` (`doctor`, `bench`), on stderr.
    pub fn new(command: &'static str) -> Progress {
        Progress {
            command,
            tty: std::io::stderr().is_terminal(),
            unit: String::new(),
            phase: String::new(),
            drawn: false,
        }
    }

    /// Starts a phase of `unit`.
    pub fn phase(&mut self, unit: &str, phase: &str) {
        self.unit = unit.to_string();
        self.phase = phase.to_string();
        if self.tty {
            self.draw(0, 0);
        } else {
            eprintln!("{}: {unit}: {phase}", self.command);
        }
    }

    /// Redraws the bar: `done` of `total` steps of the current phase.
    pub fn tick(&mut self, done: usize, total: usize) {
        if self.tty && (done == total || done.is_multiple_of(4)) {
            self.draw(done, total);
        }
    }

    fn draw(&mut self, done: usize, total: usize) {
        const WIDTH: usize = 28;
        let filled = (done * WIDTH).checked_div(total).unwrap_or(0).min(WIDTH);
        let bar: String = "█".repeat(filled) + &"░".repeat(WIDTH - filled);
        let count = if total == 0 { String::new() } else { format!(" {done}/{total}") };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K\x1b[1m{:<12}\x1b[0m {:<28} {bar}{count}", self.unit, self.phase);
        let _ = err.flush();
        self.drawn = true;
    }

    /// Clears the bar (before the report is printed).
    pub fn finish(&mut self) {
        if self.tty && self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}
