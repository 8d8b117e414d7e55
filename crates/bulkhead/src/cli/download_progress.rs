//! Draws hub downloads on stderr: a progress bar on a terminal, otherwise (logs, CI, containers) one line per plan
//! and file plus a progress line every few seconds. With `--log-json` the lines go through `tracing` instead.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_hub::error::human_bytes;
use bulkhead_hub::{Event, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between progress lines when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The progress sink of the command line.
pub struct Reporter {
    cache_dir: PathBuf,
    tty: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    bar: Option<ProgressBar>,
    /// Bytes of the current plan already complete (finished files, and resumed prefixes).
    base: u64,
    /// The file being downloaded and its size.
    current: Option<(String, u64)>,
    total: u64,
    started: Option<Instant>,
    last_line: Option<Instant>,
}

impl Reporter {
    /// A reporter for downloads into `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Reporter {
        let tty = std::io::stderr().is_terminal() && !super::log_json();
        Reporter { cache_dir, tty, state: Mutex::default() }
    }

    fn line(&self, state: &State, text: &str) {
        match (&state.bar, super::log_json()) {
            (Some(bar), _) => bar.println(text),
            (None, true) => tracing::info!("{text}"),
            (None, false) => eprintln!("{text}"),
        }
    }
}

impl Progress for Reporter {
    fn event(&self, event: &Event<'_>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *event {
            Event::Plan { repo, commit, files, bytes, cached } => {
                s.base = 0;
                s.total = bytes;
                s.started.get_or_insert_with(Instant::now);
                s.last_line = Some(Instant::now());
                let text = format!(
                    "downloading {repo} ({}): {files} file(s), {} into {}{}",
                    &commit[..commit.len().min(10)],
                    human_bytes(bytes),
                    self.cache_dir.display(),
                    if cached > 0 { format!(" ({cached} already cached)") } else { String::new() }
                );
                if let Some(bar) = s.bar.take() {
                    bar.finish_and_clear();
                }
                self.line(&s, &text);
                if self.tty && bytes > 0 {
                    let style = ProgressStyle::with_template(
                        "{msg:30!} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    s.bar = Some(ProgressBar::new(bytes).with_style(style));
                }
            }
            Event::FileStarted { file, size, offset } => {
                s.current = Some((file.to_string(), size));
                let resumed = if offset > 0 { format!(", resuming at {}", human_bytes(offset)) } else { String::new() };
                self.line(&s, &format!("  {file} ({}{resumed})", human_bytes(size)));
                if let Some(bar) = &s.bar {
                    bar.set_message(file.to_string());
                    bar.set_position(s.base + offset);
                }
            }
            Event::Bytes { file, done, size } => {
                if let Some(bar) = &s.bar {
                    bar.set_position(s.base + done);
                } else if s.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    s.last_line = Some(Instant::now());
                    let all = s.base + done;
                    let pct = if s.total > 0 { all as f64 * 100.0 / s.total as f64 } else { 100.0 };
                    let text = format!(
                        "  {file}: {} of {} ({:.0}% of the download)",
                        human_bytes(done),
                        human_bytes(size),
                        pct.min(100.0)
                    );
                    self.line(&s, &text);
                }
            }
            Event::Retrying { file, attempt, reason } => {
                self.line(&s, &format!("  {file}: attempt {attempt} after: {reason}"));
            }
            Event::FileDone { file, size } => {
                if s.current.as_ref().is_some_and(|(f, _)| f == file) {
                    s.base += size;
                    s.current = None;
                }
            }
            Event::Finished { downloaded, elapsed } => {
                if let Some(bar) = s.bar.take() {
                    bar.finish_and_clear();
                }
                if downloaded > 0 || s.started.is_some() {
                    let secs = elapsed.as_secs_f64().max(1e-3);
                    let text = format!(
                        "downloaded {} in {secs:.1} s ({}/s)",
                        human_bytes(downloaded),
                        human_bytes((downloaded as f64 / secs) as u64)
                    );
                    self.line(&s, &text);
                }
            }
        }
    }
}
