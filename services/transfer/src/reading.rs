//! Reading an export's document back (import): JSON or CSV as export wrote
//! them, into one `ExportDocument`, checked against the field rules of that
//! message (the same the OpenAPI document publishes), with every problem
//! named by its place (`data.activity_log[17].occurred_at`, or, in a CSV
//! document, `csv[18].occurred_at`), all of them at once, before anything
//! is written.

use fleet_kit::error::Violations;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value;

use crate::{
    document::{ActivityRecord, Data, Document, MfaRecord, Profile, SessionRecord},
    stream::Format,
    table::{COLUMNS, restore},
};

/// The most problems one answer lists; past them, the document is refused
/// with what was found so far.
const MAX_PROBLEMS: usize = 100;

/// A document read back.
#[derive(Debug)]
pub struct Read {
    /// The format it came in.
    pub format: Format,
    /// What it holds.
    pub document: Document,
}

/// The format of a body by its media type.
pub fn format_of(content_type: &str) -> Option<Format> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Some(Format::Json),
        "text/csv" => Some(Format::Csv),
        _ => None,
    }
}

/// Reads and checks a document; every problem found, otherwise.
pub fn read(content_type: &str, bytes: &[u8]) -> Result<Read, Violations> {
    let Some(format) = format_of(content_type) else {
        return Err(one(
            "content-type",
            "must be application/json or text/csv, as export wrote it",
        ));
    };
    let (document, places) = match format {
        Format::Json => {
            let document = from_json(bytes)?;
            let entries = document.data.as_ref().map_or(0, |d| d.activity_log.len());
            let places = (0..entries).map(|i| format!("data.activity_log[{i}]")).collect();
            (document, places)
        }
        Format::Csv => from_csv(bytes)?,
    };
    check(&document, &places)?;
    Ok(Read { format, document })
}

fn message(name: &str) -> MessageDescriptor {
    fleet_proto::rules::pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| unreachable!("{name} is in the descriptor set"))
}

fn one(place: impl Into<String>, message: impl Into<String>) -> Violations {
    let mut v = Violations::new();
    v.add(place, message);
    v
}

/// The field rules of `part` as the message `name`, each place under
/// `prefix`.
fn rules_of(v: &mut Violations, name: &str, part: &impl serde::Serialize, prefix: &str) {
    let checked = serde_json::to_value(part).map_err(|e| e.to_string()).and_then(|value| {
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        DynamicMessage::deserialize_with_options(message(name), value, &options).map_err(|e| e.to_string())
    });
    match checked {
        Ok(dynamic) => {
            for problem in fleet_proto::rules::check(&dynamic) {
                v.add(format!("{prefix}{}", problem.field), problem.message);
            }
        }
        Err(e) => v.add(prefix.trim_end_matches('.').to_string(), e),
    }
}

/// The rules of `fleet.transfer.v1.ExportDocument`, part by part, so that
/// the log is never held twice: the document without its log, then each
/// entry at its place.
fn check(doc: &Document, places: &[String]) -> Result<(), Violations> {
    let mut v = Violations::new();
    let head = Document {
        data: doc.data.as_ref().map(|d| Data {
            activity_log: Vec::new(),
            ..d.clone()
        }),
        ..doc.clone()
    };
    rules_of(&mut v, "fleet.transfer.v1.ExportDocument", &head, "");
    let log = doc.data.as_ref().map_or(&[][..], |d| &d.activity_log);
    for (entry, place) in log.iter().zip(places) {
        if v.iter().count() >= MAX_PROBLEMS {
            break;
        }
        rules_of(&mut v, "fleet.transfer.v1.ExportEntry", entry, &format!("{place}."));
    }
    v.into_result()
}

fn from_json(bytes: &[u8]) -> Result<Document, Violations> {
    let problem = |place: String, inner: serde_json::Error| {
        let place = if place == "." || place.is_empty() {
            "document".to_string()
        } else {
            place
        };
        let message = if inner.is_eof() {
            "the document ends too early (truncated?)".to_string()
        } else if inner.is_syntax() {
            format!("is not JSON: {inner}")
        } else {
            inner.to_string()
        };
        one(place, message)
    };
    let nulls = fleet_proto::json::misplaced_nulls(&message("fleet.transfer.v1.ExportDocument"), bytes)
        .map_err(|e| problem("document".into(), e))?;
    let mut v = Violations::new();
    for null in nulls.into_iter().take(MAX_PROBLEMS) {
        v.add(null.field, null.message);
    }
    v.into_result()?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let document: Document = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let place = e.path().to_string();
        problem(place, e.into_inner())
    })?;
    de.end().map_err(|e| problem("document".into(), e))?;
    Ok(document)
}

/// A CSV document, row by row; `csv[N]` is the N-th record (the header is 1).
fn from_csv(bytes: &[u8]) -> Result<(Document, Vec<String>), Violations> {
    let mut v = Violations::new();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes);
    let mut records = reader.records();
    match records.next() {
        Some(Ok(header)) if header.iter().eq(COLUMNS.iter().copied()) => {}
        Some(Err(e)) => {
            v.add("csv[1]", format!("is not CSV: {e}"));
            return Err(v);
        }
        _ => {
            v.add("csv[1]", format!("the header must be {}", COLUMNS.join(",")));
            return Err(v);
        }
    }
    let mut meta = serde_json::Map::new();
    let mut profile = serde_json::Map::new();
    let mut mfa = serde_json::Map::new();
    let mut sessions = Vec::new();
    let mut activity = Vec::new();
    let mut places = Vec::new();
    for (i, record) in records.enumerate() {
        let place = format!("csv[{}]", i + 2);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                v.add(place, format!("is not CSV: {e}"));
                break;
            }
        };
        if record.len() != COLUMNS.len() {
            v.add(place, format!("must have {} cells", COLUMNS.len()));
            continue;
        }
        let cell = |n: usize| restore(&record[n]).to_string();
        let [section, id, kind, occurred_at, ip, user_agent, details, field, value] = std::array::from_fn(cell);
        let details_object = |v: &mut Violations| match serde_json::from_str::<Value>(&details) {
            Ok(Value::Object(map)) => Some(map),
            _ => {
                v.add(format!("{place}.details"), "must be a JSON object");
                None
            }
        };
        match section.as_str() {
            "meta" => {
                meta.insert(field, typed(&value));
            }
            "profile" => {
                profile.insert(
                    field,
                    if value.is_empty() {
                        Value::Null
                    } else {
                        Value::String(value)
                    },
                );
            }
            "mfa" => {
                mfa.insert(field, typed(&value));
            }
            "session" => {
                let Some(d) = details_object(&mut v) else { continue };
                let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
                sessions.push(SessionRecord {
                    id,
                    created_at: (!occurred_at.is_empty()).then_some(occurred_at),
                    last_used_at: text("last_used_at"),
                    expires_at: text("expires_at"),
                    ip,
                    user_agent,
                });
            }
            "activity" => {
                let Some(details) = details_object(&mut v) else {
                    continue;
                };
                activity.push(ActivityRecord {
                    id,
                    kind,
                    occurred_at,
                    ip,
                    user_agent,
                    details,
                });
                places.push(place);
            }
            _ => v.add(
                format!("{place}.section"),
                "must be meta, profile, mfa, session or activity",
            ),
        }
        if v.iter().count() >= MAX_PROBLEMS {
            break;
        }
    }
    let meta: Option<Meta> = typed_part(&mut v, "meta", meta);
    let profile: Option<Profile> = typed_part(&mut v, "profile", profile);
    let mfa: Option<MfaRecord> = if mfa.is_empty() {
        None
    } else {
        typed_part(&mut v, "mfa", mfa)
    };
    v.into_result()?;
    let (Some(meta), Some(profile)) = (meta, profile) else {
        return Err(Violations::new());
    };
    let document = Document {
        user_id: meta.user_id,
        exported_at: meta.exported_at,
        format_version: meta.format_version,
        data: Some(Data {
            profile: Some(profile),
            sessions,
            mfa,
            activity_log: activity,
        }),
    };
    Ok((document, places))
}

/// The rows of one section of a CSV document as its type.
fn typed_part<T: serde::de::DeserializeOwned>(
    v: &mut Violations,
    name: &str,
    map: serde_json::Map<String, Value>,
) -> Option<T> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| v.add(format!("csv.{name}"), e.to_string()))
        .ok()
}

/// The `meta` rows of a CSV document.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    user_id: String,
    exported_at: String,
    format_version: u32,
}

/// A `value` cell: JSON where it reads as such (numbers, booleans, lists),
/// text otherwise.
fn typed(value: &str) -> Value {
    match serde_json::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_))) => v,
        _ if value.is_empty() => Value::Null,
        _ => Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"user_id":"u","exported_at":"2026-12-02T00:00:00Z","format_version":1,
        "data":{"profile":{"id":"u","email":"a@example.com","display_name":"Ada","role":"user",
        "status":"active","created_at":"2026-01-01T00:00:00Z","updated_at":null},"sessions":[],
        "mfa":{"enabled":false,"methods":[],"backup_codes_remaining":0,"sms_enabled":false},
        "activity_log":[{"id":"01a23538-2936-7281-acce-ae5873532f76","kind":"user.created",
        "occurred_at":"2026-01-01T00:00:00Z","ip":"","user_agent":"","details":{}}]}}"#;

    fn fields(err: Violations) -> Vec<(String, String)> {
        err.iter().map(|f| (f.field.clone(), f.message.clone())).collect()
    }

    #[test]
    fn what_export_writes_import_reads_in_both_formats() {
        use crate::document::{
            ActivityRecord, CLOSING, Head,
            tests::{mfa, profile},
        };
        let mut p = profile();
        p.display_name = "=HYPERLINK(\"x\")".into();
        let head = Head {
            user_id: "u",
            exported_at: "2026-12-02T00:00:00.123456Z".into(),
            format_version: 1,
            profile: &p,
            sessions: &[],
            mfa: &mfa(),
        };
        let entry = ActivityRecord {
            id: "01a23538-2936-7281-acce-ae5873532f76".into(),
            kind: "auth.login_failed".into(),
            occurred_at: "2026-12-01T10:00:00Z".into(),
            ip: "192.0.2.1".into(),
            user_agent: "@SUM(1)".into(),
            details: serde_json::json!({"reason": "password", "consecutive_failures": 2})
                .as_object()
                .unwrap()
                .clone(),
        };
        let mut json = head.opening().unwrap();
        serde_json::to_writer(&mut json, &entry).unwrap();
        json.extend_from_slice(CLOSING);
        let mut table = crate::table::TableWriter::new(&head).unwrap();
        table.activity(&entry).unwrap();
        let csv = table.take().unwrap();
        for (media, bytes) in [("application/json", json), ("text/csv", csv)] {
            let read = read(media, &bytes).unwrap_or_else(|v| panic!("{media}: {v}"));
            let data = read.document.data.unwrap();
            assert_eq!(data.profile.unwrap().display_name, p.display_name, "{media}");
            assert_eq!(data.activity_log, std::slice::from_ref(&entry), "{media}");
        }
    }

    #[test]
    fn a_good_document_reads_back() {
        let read = read("application/json; charset=utf-8", GOOD.as_bytes()).unwrap();
        assert_eq!(read.document.data.unwrap().activity_log.len(), 1);
    }

    #[test]
    fn every_problem_is_named_by_its_place() {
        let bad = GOOD
            .replace(r#""format_version":1"#, r#""format_version":7"#)
            .replace(
                r#""occurred_at":"2026-01-01T00:00:00Z""#,
                r#""occurred_at":"yesterday""#,
            )
            .replace(r#""kind":"user.created""#, r#""kind":"DROP TABLE""#);
        let found = fields(read("application/json", bad.as_bytes()).unwrap_err());
        let places: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            places,
            [
                "format_version",
                "data.activity_log[0].kind",
                "data.activity_log[0].occurred_at"
            ],
            "{found:?}"
        );
        let wrong_type = GOOD.replace(r#""ip":"""#, r#""ip":5"#);
        let found = fields(read("application/json", wrong_type.as_bytes()).unwrap_err());
        assert_eq!(found[0].0, "data.activity_log[0].ip", "{found:?}");
        let truncated = &GOOD[..GOOD.len() - 10];
        let found = fields(read("application/json", truncated.as_bytes()).unwrap_err());
        assert!(found[0].1.contains("truncated"), "{found:?}");
        let found = fields(read("application/xml", GOOD.as_bytes()).unwrap_err());
        assert_eq!(found[0].0, "content-type");
    }

    #[test]
    fn a_csv_with_a_wrong_header_or_row_is_refused_where_it_is_wrong() {
        let found = fields(read("text/csv", b"a,b,c\r\n").unwrap_err());
        assert_eq!(found[0].0, "csv[1]", "{found:?}");
        let csv = format!(
            "{}\r\nmeta,,,,,,,user_id,u\r\nmeta,,,,,,,exported_at,2026-12-02T00:00:00Z\r\nmeta,,,,,,,format_version,1\r\n\
             profile,,,,,,,id,u\r\nprofile,,,,,,,display_name,Ada\r\n\
             activity,x,user.created,never,,,{{}},,\r\nnonsense,,,,,,,,\r\n",
            COLUMNS.join(",")
        );
        let found = fields(read("text/csv", csv.as_bytes()).unwrap_err());
        let places: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(places, ["csv[8].section"], "{found:?}");
        let csv = csv.replace("nonsense,,,,,,,,\r\n", "");
        let found = fields(read("text/csv", csv.as_bytes()).unwrap_err());
        let places: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(places, ["csv[7].id", "csv[7].occurred_at"], "{found:?}");
    }
}
