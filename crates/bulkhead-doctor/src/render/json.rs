//! The report as JSON (schema `bulkhead.doctor/1`, documented field by field in docs/doctor.md), and reading a
//! saved one back.

use crate::report::{Report, SCHEMA};
use crate::Error;

/// The report as pretty-printed JSON.
pub fn render(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("the report serializes: plain data with string keys")
}

/// Reads a report saved with `--json`; another schema or malformed JSON is an error naming what was expected.
pub fn parse(text: &str) -> Result<Report, Error> {
    let report: Report = serde_json::from_str(text).map_err(|e| Error::NotAReport(e.to_string()))?;
    if report.schema != SCHEMA {
        return Err(Error::NotAReport(format!("schema `{}`", report.schema)));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_documents_are_refused() {
        assert!(matches!(parse("{}"), Err(Error::NotAReport(_))));
        assert!(matches!(parse("not json"), Err(Error::NotAReport(_))));
    }
}
