//! Agreements between the timely workers of a run.

use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;

/// An input that carries no data, only progress: each worker advances or
/// closes its own, and timely's progress tracking tells every worker the
/// least over all of them. Used for acknowledged epochs and, closed once,
/// as an all-workers agreement (caught up, stopping).
pub struct Progress {
    input: Option<Handle<u64, ()>>,
    probe: ProbeHandle<u64>,
}

impl Progress {
    pub fn new(worker: &mut timely::worker::Worker) -> Progress {
        let (input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<()>();
            (input, stream.probe().0)
        });
        Progress { input: Some(input), probe }
    }

    pub fn advance_to(&mut self, time: u64) {
        if let Some(input) = self.input.as_mut() {
            input.advance_to(time);
        }
    }

    pub fn close(&mut self) {
        self.input = None;
    }

    pub fn closed(&self) -> bool {
        self.input.is_none()
    }

    /// Every worker has closed its input.
    pub fn all_closed(&self) -> bool {
        self.probe.done()
    }

    /// The least time any worker's input is still open at.
    pub fn least(&self) -> u64 {
        self.probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_time_and_closing_are_agreed_by_all_workers() {
        // Nobody moves on before both have read the least time.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let mut p = Progress::new(worker);
            // Worker 1 lags at 3 while worker 0 is at 7.
            p.advance_to(if worker.index() == 0 { 7 } else { 3 });
            worker.step_while(|| p.least() < 3);
            let least = p.least();
            barrier.wait();
            // Worker 0 closes; worker 1 catches up to 7: closed inputs no
            // longer hold the least time back.
            if worker.index() == 0 {
                p.close();
            } else {
                p.advance_to(7);
            }
            worker.step_while(|| p.least() < 7);
            // Worker 1 has not closed yet: not all have (worker 0 may
            // already see worker 1 close, so only worker 1 asks).
            let closed_alone = worker.index() == 1 && p.all_closed();
            if !p.closed() {
                p.close();
            }
            worker.step_while(|| !p.all_closed());
            (least, closed_alone)
        })
        .expect("timely");
        for r in guards.join() {
            assert_eq!(r.expect("worker"), (3, false));
        }
    }
}
