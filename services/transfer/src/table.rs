//! The export as one CSV table (RFC 4180: quoted where needed, CRLF line
//! ends), for spreadsheets. Every row has the same columns:
//!
//! `section,id,kind,occurred_at,ip,user_agent,details,field,value`
//!
//! - `meta`, `profile` and `mfa` rows name one `field` and its `value`
//!   (text as is, numbers and booleans as JSON, lists as a JSON array, an
//!   absent value as an empty cell);
//! - `session` rows: `id`, `occurred_at` (when it was opened), `ip`,
//!   `user_agent`, and `details` (a JSON object: `last_used_at`,
//!   `expires_at`);
//! - `activity` rows: `id`, `kind`, `occurred_at`, `ip`, `user_agent`,
//!   `details` (a JSON object).
//!
//! A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or
//! a carriage return as a formula. Such a cell is written with a `'` in
//! front, which spreadsheets show as text; so is a cell that starts with
//! `'` itself, so that reading strips exactly one leading `'` and gets the
//! original back, whatever it was.

use serde_json::Value;

use crate::document::{ActivityRecord, Head, SessionRecord};

/// The header row.
pub const COLUMNS: [&str; 9] = [
    "section",
    "id",
    "kind",
    "occurred_at",
    "ip",
    "user_agent",
    "details",
    "field",
    "value",
];

/// Where a cell would start a formula, or is escaped already.
fn needs_guard(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r', '\''])
}

/// A cell as written: guarded when a spreadsheet would run it.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if needs_guard(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// A cell as read: the original value of a cell [`neutralise`] wrote.
pub fn restore(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_guard(rest) => rest,
        _ => cell,
    }
}

/// A value in a `value` cell.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The table being written: rows go into a buffer the caller takes and
/// sends on.
pub struct TableWriter {
    csv: csv::Writer<Vec<u8>>,
}

fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(80 * 1024))
}

impl TableWriter {
    /// The header row and every row before the activity log.
    pub fn new(head: &Head<'_>) -> anyhow::Result<Self> {
        let mut table = Self { csv: csv_writer() };
        table.row(COLUMNS)?;
        let meta = serde_json::json!({
            "user_id": head.user_id,
            "exported_at": head.exported_at,
            "format_version": head.format_version,
        });
        table.fields("meta", &meta)?;
        table.fields("profile", &serde_json::to_value(head.profile)?)?;
        table.fields("mfa", &serde_json::to_value(head.mfa)?)?;
        for session in head.sessions {
            table.session(session)?;
        }
        Ok(table)
    }

    fn row(&mut self, cells: [&str; 9]) -> csv::Result<()> {
        self.csv
            .write_record(cells.map(neutralise).iter().map(|c| c.as_bytes()))
    }

    fn fields(&mut self, section: &str, value: &Value) -> csv::Result<()> {
        if let Value::Object(map) = value {
            for (field, value) in map {
                self.row([section, "", "", "", "", "", "", field, &text(value)])?;
            }
        }
        Ok(())
    }

    fn session(&mut self, s: &SessionRecord) -> anyhow::Result<()> {
        let details = serde_json::json!({"last_used_at": s.last_used_at, "expires_at": s.expires_at}).to_string();
        let opened = s.created_at.as_deref().unwrap_or_default();
        self.row(["session", &s.id, "", opened, &s.ip, &s.user_agent, &details, "", ""])?;
        Ok(())
    }

    /// One activity row.
    pub fn activity(&mut self, e: &ActivityRecord) -> anyhow::Result<()> {
        let details = serde_json::to_string(&e.details)?;
        self.row([
            "activity",
            &e.id,
            &e.kind,
            &e.occurred_at,
            &e.ip,
            &e.user_agent,
            &details,
            "",
            "",
        ])?;
        Ok(())
    }

    /// How much is written and not yet taken (less what the CSV writer
    /// still holds in its own small buffer).
    pub fn buffered(&self) -> usize {
        self.csv.get_ref().len()
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> anyhow::Result<Vec<u8>> {
        let written = std::mem::replace(&mut self.csv, csv_writer());
        written
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_restored_exactly() {
        for cell in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1+1",
            "@SUM(A1:A2)",
            "-2+3",
            "\tleading tab",
            "\rcarriage",
            "'already quoted",
            "''=twice",
            "'",
        ] {
            let written = neutralise(cell);
            assert!(written.starts_with('\''), "{cell:?} is guarded: {written:?}");
            assert_eq!(restore(&written), cell);
        }
        for plain in ["Ada", "2026-12-02T00:00:00Z", "192.0.2.1", "", "a=b", "x'"] {
            assert_eq!(neutralise(plain), plain);
            assert_eq!(restore(plain), plain);
        }
    }

    #[test]
    fn rows_are_rfc_4180_with_a_guard_where_a_spreadsheet_would_run_a_cell() {
        let record = ActivityRecord {
            id: "e1".into(),
            kind: "user.updated".into(),
            occurred_at: "2026-12-01T10:00:00Z".into(),
            ip: "192.0.2.1".into(),
            user_agent: "=cmd|' /C calc'!A0".into(),
            details: serde_json::json!({"changed": ["display_name"], "note": "a, \"b\"\nc"})
                .as_object()
                .unwrap()
                .clone(),
        };
        let head = Head {
            user_id: "u",
            exported_at: "2026-12-02T00:00:00Z".into(),
            format_version: 1,
            profile: &crate::document::tests::profile(),
            sessions: &[],
            mfa: &crate::document::tests::mfa(),
        };
        let mut table = TableWriter::new(&head).unwrap();
        let opening = String::from_utf8(table.take().unwrap()).unwrap();
        assert!(opening.starts_with("section,id,kind,occurred_at,ip,user_agent,details,field,value\r\n"));
        assert!(opening.contains("\r\nmeta,,,,,,,format_version,1\r\n"), "{opening}");
        assert!(
            opening.contains("\r\nprofile,,,,,,,display_name,\"A \"\"quoted\"\" name\"\r\n"),
            "{opening}"
        );
        assert!(
            opening.contains("\r\nmfa,,,,,,,methods,\"[\"\"totp\"\"]\"\r\n"),
            "{opening}"
        );
        table.activity(&record).unwrap();
        let out = table.take().unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with("\r\n"), "{text:?}");
        assert!(text.contains(",'=cmd|' /C calc'!A0,"), "{text:?}");
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(out.as_slice());
        let read = reader.records().next().unwrap().unwrap();
        assert_eq!(restore(&read[5]), record.user_agent);
        let details: serde_json::Map<String, Value> = serde_json::from_str(restore(&read[6])).unwrap();
        assert_eq!(details, record.details);
    }
}
