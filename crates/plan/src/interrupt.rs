//! Stopping early: the harness's safety net for a search that would run longer than the
//! caller can wait.
//!
//! The planner has no clock, and its work budget (`Policy::budget`) is what bounds it: the
//! same input and budget give the same plan. A caller that must also bound wall time (the
//! CLI's `--time-limit`) passes an [`Interrupt`] that reads a clock. The planner asks it only
//! on the calling thread, at fixed points between steps of its search (between the LP's
//! rounds, the neighbourhoods, the chains started for each unit left out, the packing bound's
//! steps), and once told to stop it spends no more of its budget: it returns the best plan so
//! far, which keeps every rule (each step keeps only plans that do), and the bound proved so
//! far. What it asks at each point does not depend on timing, so an interrupt that counts its
//! calls stops the same run at the same place every time; the tests use that.

use std::cell::Cell;

/// Asked between steps of the search whether to stop.
pub trait Interrupt: Sync {
    /// True to stop: the planner returns its best plan so far.
    fn stop(&self) -> bool;

    /// How long until it will say stop, if it knows: passed to the branch and bound of the
    /// search's sub-problems as their time limit, so that one long solve (a whole problem
    /// re-optimised at once took 2.1 s on one 226-workload set) does not run past the
    /// deadline. The solver reads its own clock for that; the planner still reads none.
    fn time_left(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Never stops: the plan is the budget's alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct Never;

impl Interrupt for Never {
    fn stop(&self) -> bool {
        false
    }
}

/// Stops at the `n`-th question and after: the deterministic interrupt of tests and of
/// anyone replaying a run that a clock stopped.
#[derive(Debug, Default)]
pub struct AfterChecks {
    /// Questions answered "go on" before the first "stop".
    pub n: u64,
    asked: std::sync::atomic::AtomicU64,
}

impl AfterChecks {
    /// Stops after `n` questions answered "go on".
    pub fn new(n: u64) -> AfterChecks {
        AfterChecks { n, asked: 0.into() }
    }

    /// Questions asked so far.
    pub fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Interrupt for AfterChecks {
    fn stop(&self) -> bool {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            >= self.n
    }
}

/// An interrupt as the search sees it: once it has said stop, it is not asked again, and the
/// plan records that it stopped.
pub(crate) struct Watch<'a> {
    interrupt: &'a dyn Interrupt,
    fired: Cell<bool>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(interrupt: &'a dyn Interrupt) -> Watch<'a> {
        Watch {
            interrupt,
            fired: Cell::new(false),
        }
    }

    /// Whether to stop now.
    pub(crate) fn stop(&self) -> bool {
        if !self.fired.get() && self.interrupt.stop() {
            self.fired.set(true);
        }
        self.fired.get()
    }

    /// Whether it has said stop.
    pub(crate) fn fired(&self) -> bool {
        self.fired.get()
    }

    /// The time limit of the next sub-problem's solve (none unless the interrupt knows one).
    pub(crate) fn time_left(&self) -> Option<std::time::Duration> {
        if self.fired.get() {
            return Some(std::time::Duration::ZERO);
        }
        self.interrupt.time_left()
    }

    /// A solve stopped by its time limit: the interrupt's deadline has come, whatever it says
    /// when next asked.
    pub(crate) fn fire(&self) {
        self.fired.set(true);
    }
}

#[cfg(test)]
impl Watch<'static> {
    /// A watch that never stops.
    pub(crate) fn never() -> Watch<'static> {
        Watch::new(&Never)
    }
}
