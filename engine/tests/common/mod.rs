//! Helpers shared by the engine's integration tests.

use std::time::Duration;

use ringlog_engine::rt;

/// Runs the future `make` builds on a fresh executor on its own thread, and fails the test if it
/// has not finished within `limit`, so a stalled executor (glommio 0.9 has been seen to sleep in
/// `io_uring_enter` with a task runnable) fails the run instead of hanging it.
pub fn block_on_bounded<Make, Fut, T>(limit: Duration, make: Make) -> T
where
    Make: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (finished, finished_receiver) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let output = rt::block_on(make());
        let _ = finished.send(());
        output
    });
    match finished_receiver.recv_timeout(limit) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the executor made no progress for {limit:?}: stalled (see block_on_bounded)")
        }
        _ => match runner.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    }
}
