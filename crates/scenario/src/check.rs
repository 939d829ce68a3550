//! An expectation of a scenario and whether it held: what every part of a run (the boots, the
//! servers, the packets, the recovery lab) gives back for its expectations, and what every
//! view and summary reads.

use serde::Serialize;

/// An expectation and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub expectation: String,
    pub met: bool,
    /// What was seen instead, when not met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

impl std::fmt::Display for Check {
    /// "expectation (got: what was seen)", the one wording of every view.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.expectation)?;
        match &self.actual {
            Some(actual) => write!(f, " (got: {actual})"),
            None => Ok(()),
        }
    }
}
