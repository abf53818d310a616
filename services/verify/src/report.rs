//! The verification report: per-table results, rendered as text or JSON, and converted to
//! the protobuf `VerifyReport` the coordinator returns.

use std::fmt::Write as _;

use dbsync_proto::v1 as pb;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// In the source, not in the target.
    Missing,
    /// In the target, not in the source.
    Extra,
    /// In both, with other values.
    Different,
}

impl DiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
            DiffKind::Different => "different",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    /// The key as `column=canonical text, …` (the whole row for a table without key).
    pub key: String,
    /// Source names of the differing columns (kind `different`).
    pub columns: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TableReport {
    /// `database.schema.table`.
    pub source: String,
    #[serde(skip)]
    pub source_ref: pb::TableRef,
    /// `"schema"."table"` on the target.
    pub target: String,
    /// `key ranges`, `key buckets` or `row buckets` (no key).
    pub partitioning: String,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Source rows in the compared partitions.
    pub rows_compared: u64,
    pub partitions_total: u64,
    pub partitions_compared: u64,
    pub partitions_mismatched: u64,
    /// Every difference found (after re-checks); `differences` lists up to the request's cap.
    pub differences_total: u64,
    pub differences: Vec<Difference>,
    /// Rows written or deleted by repair.
    pub repaired: u64,
    /// No difference remains (and, when sampling, the counts agree).
    pub equal: bool,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub mode: String,
    pub repair: bool,
    pub equal: bool,
    pub seconds: f64,
    pub tables: Vec<TableReport>,
}

impl VerifyReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A human-readable report: one line per table, then its differences and notes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self
            .tables
            .iter()
            .map(|t| t.source.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>12}  {:>9}  {:>8}  result",
            "table", "source rows", "target rows", "compared", "diffs", "repaired"
        );
        for t in &self.tables {
            let result = if t.equal { "equal" } else { "MISMATCH" };
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>12}  {:>9}  {:>8}  {result}",
                t.source,
                t.source_rows,
                t.target_rows,
                t.rows_compared,
                t.differences_total,
                t.repaired
            );
            for d in &t.differences {
                if d.columns.is_empty() {
                    let _ = writeln!(out, "    {:<9} {}", d.kind.as_str(), d.key);
                } else {
                    let _ = writeln!(
                        out,
                        "    {:<9} {}  columns: {}",
                        d.kind.as_str(),
                        d.key,
                        d.columns.join(", ")
                    );
                }
            }
            let hidden = t
                .differences_total
                .saturating_sub(t.differences.len() as u64);
            if hidden > 0 {
                let _ = writeln!(out, "    … and {hidden} more");
            }
            for n in &t.notes {
                let _ = writeln!(out, "    note: {n}");
            }
        }
        let verdict = if self.equal {
            "source and target are equal"
        } else {
            "source and target DIFFER"
        };
        let _ = writeln!(
            out,
            "{} verification{}: {verdict} ({} tables, {:.1} s)",
            self.mode,
            if self.repair { " with repair" } else { "" },
            self.tables.len(),
            self.seconds
        );
        out
    }
}

impl From<&TableReport> for pb::TableVerification {
    fn from(t: &TableReport) -> Self {
        pb::TableVerification {
            source: Some(t.source_ref.clone()),
            target: t.target.clone(),
            source_rows: t.source_rows,
            target_rows: t.target_rows,
            rows_compared: t.rows_compared,
            differences: t
                .differences
                .iter()
                .map(|d| pb::RowDifference {
                    kind: d.kind.as_str().to_string(),
                    key: d.key.clone(),
                    columns: d.columns.clone(),
                })
                .collect(),
            repaired: t.repaired,
            equal: t.equal,
        }
    }
}

impl From<&VerifyReport> for pb::VerifyReport {
    fn from(r: &VerifyReport) -> Self {
        pb::VerifyReport {
            tables: r.tables.iter().map(Into::into).collect(),
            equal: r.equal,
            seconds: r.seconds,
        }
    }
}

impl From<VerifyReport> for pb::VerifyReport {
    fn from(r: VerifyReport) -> Self {
        (&r).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_name_every_difference() {
        let report = VerifyReport {
            mode: "full".into(),
            repair: false,
            equal: false,
            seconds: 1.0,
            tables: vec![TableReport {
                source: "shop.sales.orders".into(),
                target: "\"sales\".\"orders\"".into(),
                source_rows: 3,
                target_rows: 2,
                differences_total: 2,
                differences: vec![
                    Difference {
                        kind: DiffKind::Missing,
                        key: "order_id=7".into(),
                        columns: vec![],
                    },
                    Difference {
                        kind: DiffKind::Different,
                        key: "order_id=9".into(),
                        columns: vec!["status".into()],
                    },
                ],
                ..Default::default()
            }],
        };
        let text = report.to_text();
        assert!(text.contains("MISMATCH"), "{text}");
        assert!(text.contains("missing   order_id=7"), "{text}");
        assert!(text.contains("columns: status"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["tables"][0]["differences"][1]["kind"], "different");
        let pb: pb::VerifyReport = (&report).into();
        assert_eq!(pb.tables[0].differences[0].kind, "missing");
        assert!(!pb.equal);
    }
}
