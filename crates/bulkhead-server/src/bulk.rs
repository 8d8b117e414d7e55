//! One thread at lower CPU priority for the work a large request brings before it reaches a model: parsing a
//! multi-megabyte body. It runs off the async runtime's threads, one body at a time, at
//! [`BACKGROUND_NICE`](crate::backend::BACKGROUND_NICE) over the server's priority, so that on a busy machine the
//! threads serving short requests (and their workers) go first. Without that thread (it could not start), the work
//! goes to tokio's blocking pool.

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::backend::{lower_this_thread, BACKGROUND_NICE};

type Work = Box<dyn FnOnce() + Send>;

/// The thread's queue (`None`: it could not start).
fn queue() -> &'static Option<Mutex<mpsc::Sender<Work>>> {
    static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Work>>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Work>();
        let started = std::thread::Builder::new().name("large bodies".into()).spawn(move || {
            lower_this_thread(BACKGROUND_NICE);
            while let Ok(work) = rx.recv() {
                work();
            }
        });
        started.ok().map(|_| Mutex::new(tx))
    })
}

/// Runs `f` on the thread for large requests and waits for it without holding an async thread.
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = oneshot::channel();
    let work: Work = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = match queue() {
        Some(q) => q.lock().unwrap_or_else(|e| e.into_inner()).send(work).map_err(|e| e.0),
        None => Err(work),
    };
    match sent {
        Ok(()) => rx.await.map_err(|_| "the thread for large requests stopped".to_string()),
        Err(work) => {
            tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string())?;
            rx.await.map_err(|_| "the blocking pool dropped the work".to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_runtime_and_answers_in_order() {
        let runtime_thread = std::thread::current().id();
        let mut answers = vec![];
        for i in 0..5 {
            answers.push(run(move || (i, std::thread::current().name().map(str::to_string))).await.unwrap());
        }
        assert!(answers.iter().enumerate().all(|(i, (j, _))| i == *j));
        assert!(answers.iter().all(|(_, name)| name.as_deref() == Some("large bodies")));
        assert_ne!(run(|| std::thread::current().id()).await.unwrap(), runtime_thread);
    }
}
