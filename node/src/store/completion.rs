//! The hand-off from the committer to the callers of one batch: each caller waits, blocking or
//! as a future, until the batch's commit has succeeded or failed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct State {
    /// `None` while the batch is not committed; then its outcome (the error as text, since
    /// every caller of the batch gets its own copy).
    outcome: Option<Result<(), (io::ErrorKind, String)>>,
    wakers: Vec<Waker>,
}

/// Shared by all operations of one batch.
#[derive(Debug, Default)]
pub(crate) struct BatchDone {
    state: Mutex<State>,
    cond: Condvar,
}

impl BatchDone {
    /// Records the outcome and releases every waiter.
    pub(crate) fn finish(&self, outcome: Result<(), &io::Error>) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.outcome = Some(outcome.map_err(|e| (e.kind(), e.to_string())));
            std::mem::take(&mut state.wakers)
        };
        self.cond.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    fn outcome(state: &State) -> Option<io::Result<()>> {
        state.outcome.as_ref().map(|o| o.clone().map_err(|(kind, msg)| io::Error::new(kind, msg)))
    }
}

/// A caller's handle on the durability of its operation.
#[derive(Debug, Clone)]
pub struct Completion(pub(crate) Arc<BatchDone>);

impl Completion {
    /// Blocks until the operation's batch is committed; its error if the commit failed.
    pub fn wait(&self) -> io::Result<()> {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = BatchDone::outcome(&state) {
                return outcome;
            }
            state = self.0.cond.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Future for Completion {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        match BatchDone::outcome(&state) {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
