//! How many of a case's targets are in each state, and the case as a card shows it while it runs
//! and when it ends: its first few targets and that tally, never all its targets at once.

use super::{Case, CaseState, Target, TargetStatus};

/// How many of a case's targets are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetTally {
    /// Not executed yet.
    pub pending: usize,
    /// Graph confirmed them.
    pub done: usize,
    /// Graph refused or failed.
    pub failed: usize,
    /// Deliberately not executed.
    pub skipped: usize,
}

impl TargetTally {
    /// The tally of `targets`.
    pub fn of(targets: &[Target]) -> Self {
        let mut tally = Self::default();
        for target in targets {
            tally.add(target.status, 1);
        }
        tally
    }

    /// Counts `n` more targets in `status`.
    pub fn add(&mut self, status: TargetStatus, n: usize) {
        match status {
            TargetStatus::Pending => self.pending += n,
            TargetStatus::Done => self.done += n,
            TargetStatus::Failed => self.failed += n,
            TargetStatus::Skipped => self.skipped += n,
        }
    }

    /// Every target.
    pub fn total(&self) -> usize {
        self.pending + self.done + self.failed + self.skipped
    }

    /// The targets with an outcome.
    pub fn recorded(&self) -> usize {
        self.done + self.failed + self.skipped
    }

    /// Whether a case in `state` with these targets reached Graph for at least one of them:
    /// `done`, or `failed` with a target done.
    pub fn executed(&self, state: CaseState) -> bool {
        match state {
            CaseState::Done => true,
            CaseState::Failed => self.done > 0,
            _ => false,
        }
    }

    /// The state an executed case ends in: `failed` if any target failed, else `done`; `None`
    /// while a target is still pending (the run did not get through them all).
    pub fn final_state(&self) -> Option<CaseState> {
        match (self.pending, self.failed) {
            (0, 0) => Some(CaseState::Done),
            (0, _) => Some(CaseState::Failed),
            _ => None,
        }
    }
}

/// How many targets a [`CaseSummary`] lists: as many as a card shows.
pub const SUMMARY_TARGETS: usize = 15;

/// A case with only its first [`SUMMARY_TARGETS`] targets (`case.targets`) and the tally of all
/// of them: what a card needs of a case of any size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseSummary {
    /// The case; `targets` holds its first targets by position, not necessarily all of them.
    pub case: Case,
    /// All its targets, counted by state.
    pub tally: TargetTally,
}

impl CaseSummary {
    /// The summary of a case read whole.
    pub fn of(case: Case) -> Self {
        let tally = TargetTally::of(&case.targets);
        Self { case, tally }
    }

    /// Whether the case reached Graph for at least one target (see [`Case::executed`]).
    pub fn executed(&self) -> bool {
        self.tally.executed(self.case.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_state_waits_for_every_target() {
        let mut tally = TargetTally { pending: 1, done: 3, ..TargetTally::default() };
        assert_eq!(tally.final_state(), None);
        tally.pending = 0;
        assert_eq!(tally.final_state(), Some(CaseState::Done));
        tally.add(TargetStatus::Skipped, 2);
        assert_eq!(tally.final_state(), Some(CaseState::Done), "skipped targets do not fail a case");
        tally.add(TargetStatus::Failed, 1);
        assert_eq!(tally.final_state(), Some(CaseState::Failed));
        assert_eq!((tally.total(), tally.recorded()), (6, 6));
    }

    #[test]
    fn a_failed_case_was_executed_only_if_a_target_was_done() {
        let failed_only = TargetTally { failed: 2, ..TargetTally::default() };
        assert!(!failed_only.executed(CaseState::Failed));
        assert!(TargetTally { done: 1, ..failed_only }.executed(CaseState::Failed));
        assert!(TargetTally::default().executed(CaseState::Done));
        assert!(!TargetTally { done: 1, ..TargetTally::default() }.executed(CaseState::Executing));
    }
}
