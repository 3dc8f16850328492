//! Activity results: what a provider or an operator reports about an
//! activity, and how a result moves the activity (reference §10).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ActivityStatus;

string_enum!(
    /// The status a result reports.
    ResultStatus {
        /// Received, not processed yet: the activity does not move.
        Pending => "PENDING",
        Completed => "COMPLETED",
        NotExecuted => "NOT_EXECUTED",
        Canceled => "CANCELED",
        /// Handed to another operator: the activity is COMPLETED.
        Transferred => "TRANSFERRED",
    }
);

string_enum!(
    /// Who started the contact a result reports.
    ContactDirection {
        Inbound => "INBOUND",
        Outbound => "OUTBOUND",
    }
);

string_enum!(
    /// Whether a result is attached to an activity.
    ResultSource {
        /// Matched by `activity_id` or `provider_activity_id`.
        RetenActivity => "RETEN_ACTIVITY",
        /// Nothing matched: stored with its commerce only.
        Standalone => "STANDALONE",
    }
);

impl ResultStatus {
    /// Parses a status, also taking the integration API's vocabulary
    /// (`EFFECTIVE`, `NOT_EFFECTIVE`) as the platform's.
    pub fn parse_lenient(raw: &str) -> Option<Self> {
        match raw {
            "EFFECTIVE" => Some(ResultStatus::Completed),
            "NOT_EFFECTIVE" => Some(ResultStatus::NotExecuted),
            other => Self::parse(other),
        }
    }

    /// The status a result moves its activity to; `None` leaves it as it is.
    pub fn target(self) -> Option<ActivityStatus> {
        match self {
            ResultStatus::Pending => None,
            ResultStatus::Completed | ResultStatus::Transferred => Some(ActivityStatus::Completed),
            ResultStatus::NotExecuted => Some(ActivityStatus::Failed),
            ResultStatus::Canceled => Some(ActivityStatus::Canceled),
        }
    }
}

impl ActivityStatus {
    /// Whether the activity's lifecycle has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, ActivityStatus::Completed | ActivityStatus::Failed | ActivityStatus::Canceled)
    }
}

/// What a result does to an activity in `current`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultEffect {
    /// Stored; the activity stays as it is.
    Keep,
    /// Stored, and the activity moves to this status.
    Move(ActivityStatus),
    /// Refused: the activity is already in a terminal status (or cannot take
    /// a result at all), and the result did not ask to override.
    Conflict,
}

/// How a result of `status` moves an activity in `current`: from READY or
/// DISPATCHED as documented; a terminal result for an activity that cannot
/// take one is a conflict unless `hard_override`, which moves it anyway.
pub fn effect(current: ActivityStatus, status: ResultStatus, hard_override: bool) -> ResultEffect {
    let Some(to) = status.target() else { return ResultEffect::Keep };
    let open = matches!(current, ActivityStatus::Ready | ActivityStatus::Dispatched);
    if open || hard_override { ResultEffect::Move(to) } else { ResultEffect::Conflict }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_move_activities_as_documented() {
        use ActivityStatus as A;
        assert_eq!(effect(A::Dispatched, ResultStatus::Completed, false), ResultEffect::Move(A::Completed));
        assert_eq!(effect(A::Ready, ResultStatus::Transferred, false), ResultEffect::Move(A::Completed));
        assert_eq!(effect(A::Dispatched, ResultStatus::NotExecuted, false), ResultEffect::Move(A::Failed));
        assert_eq!(effect(A::Ready, ResultStatus::Canceled, false), ResultEffect::Move(A::Canceled));
        assert_eq!(effect(A::Dispatched, ResultStatus::Pending, false), ResultEffect::Keep);
    }

    #[test]
    fn a_second_terminal_result_conflicts_unless_it_overrides() {
        use ActivityStatus as A;
        assert_eq!(effect(A::Completed, ResultStatus::NotExecuted, false), ResultEffect::Conflict);
        assert_eq!(effect(A::Completed, ResultStatus::NotExecuted, true), ResultEffect::Move(A::Failed));
        assert_eq!(effect(A::Completed, ResultStatus::Pending, false), ResultEffect::Keep);
    }

    #[test]
    fn the_integration_vocabulary_maps_onto_the_platform_one() {
        assert_eq!(ResultStatus::parse_lenient("EFFECTIVE"), Some(ResultStatus::Completed));
        assert_eq!(ResultStatus::parse_lenient("NOT_EFFECTIVE"), Some(ResultStatus::NotExecuted));
        assert_eq!(ResultStatus::parse_lenient("done"), None);
    }
}
