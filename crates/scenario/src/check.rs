//! An expectation of a scenario and whether it held: what every part of a run (the boots, the
//! servers, the packets, the recovery lab) gives back for its expectations, and what every
//! view and summary reads.

use serde::Serialize;

/// An expectation and whether it held. The fields are in alphabetical order, the order
/// `result.json` has always written them in (through `serde_json`'s sorted maps at first).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was seen instead, when not met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    pub expectation: String,
    pub met: bool,
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

#[cfg(test)]
mod tests {
    use super::Check;

    #[test]
    fn a_check_serializes_its_fields_in_the_sorted_order_result_json_has() {
        for actual in [Some("3 NAKs".to_string()), None] {
            let check = Check {
                actual,
                expectation: "the server counted 2 NAKs".into(),
                met: false,
            };
            let direct = serde_json::to_string(&check).expect("serializes");
            // Through a `Value`, whose maps sort their keys: how `result.json` was first written.
            let sorted = serde_json::to_value(&check)
                .and_then(|v| serde_json::to_string(&v))
                .expect("serializes");
            assert_eq!(direct, sorted);
        }
        let unmet = Check {
            actual: Some("x".into()),
            expectation: "e".into(),
            met: false,
        };
        assert_eq!(
            serde_json::to_string(&unmet).expect("serializes"),
            r#"{"actual":"x","expectation":"e","met":false}"#
        );
    }
}
