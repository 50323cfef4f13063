//! The thread behind a `ps_converging` handle (`converging.rs`): it holds the
//! region's lock and the converging snapshot from start to finish, and answers
//! what the C calls ask of it.

use crate::region::RegionCell;
use pagesnap_lib::{ConvergeProgress, ConvergedSave, Converging, ConvergingSave, Error, Snapshot};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::Duration;

/// What the caller asks of the converging thread.
pub(crate) enum Ask {
    Progress,
    Hurry,
    Wait(Option<Duration>),
    Finish,
}

/// What it answers.
pub(crate) enum Answer {
    Progress(ConvergeProgress),
    Hurried,
    Waited(bool),
    Snapshot(Result<Snapshot, Error>),
    Saving(Result<ConvergedSave, Error>),
}

pub(crate) type Asks = Sender<(Ask, SyncSender<Answer>)>;

/// What both converging kinds answer.
trait Rounds {
    fn progress(&self) -> ConvergeProgress;
    fn hurry(&self);
    fn wait(&self, limit: Option<Duration>) -> bool;
}

impl Rounds for Converging<'_> {
    fn progress(&self) -> ConvergeProgress {
        Converging::progress(self)
    }
    fn hurry(&self) {
        Converging::hurry(self)
    }
    fn wait(&self, limit: Option<Duration>) -> bool {
        match limit {
            Some(l) => self.wait_converged_timeout(l),
            None => {
                self.wait_converged();
                true
            }
        }
    }
}

impl Rounds for ConvergingSave<'_> {
    fn progress(&self) -> ConvergeProgress {
        ConvergingSave::progress(self)
    }
    fn hurry(&self) {
        ConvergingSave::hurry(self)
    }
    fn wait(&self, limit: Option<Duration>) -> bool {
        match limit {
            Some(l) => self.wait_converged_timeout(l),
            None => {
                self.wait_converged();
                true
            }
        }
    }
}

/// Answers asks until `Finish` (answered by `finish`) or until the handle goes.
fn serve<C: Rounds>(
    conv: C,
    asks: &Receiver<(Ask, SyncSender<Answer>)>,
    finish: impl FnOnce(C) -> Answer,
) {
    while let Ok((ask, reply)) = asks.recv() {
        let answer = match ask {
            Ask::Progress => Answer::Progress(conv.progress()),
            Ask::Hurry => {
                conv.hurry();
                Answer::Hurried
            }
            Ask::Wait(limit) => Answer::Waited(conv.wait(limit)),
            Ask::Finish => {
                let _ = reply.send(finish(conv));
                return;
            }
        };
        let _ = reply.send(answer);
    }
    // The handle was freed before finish: dropping `conv` abandons the rounds.
}

/// The converging thread.
pub(crate) fn run(
    cell: &RegionCell,
    path: Option<PathBuf>,
    started: &SyncSender<Result<(), Error>>,
    asks: &Receiver<(Ask, SyncSender<Answer>)>,
) {
    let mut region = cell.lock_held();
    match path {
        None => match region.converging_snapshot() {
            Err(e) => drop(started.send(Err(e))),
            Ok(conv) => {
                let _ = started.send(Ok(()));
                serve(conv, asks, |c| {
                    let _heap = cell.heap_lock();
                    Answer::Snapshot(c.finish())
                });
            }
        },
        Some(path) => match region.converging_save(path) {
            Err(e) => drop(started.send(Err(e))),
            Ok(conv) => {
                let _ = started.send(Ok(()));
                serve(conv, asks, |c| {
                    let _heap = cell.heap_lock();
                    Answer::Saving(c.finish())
                });
            }
        },
    }
}
