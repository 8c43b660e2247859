//! The stats RPCs: a user's figures, activity and sessions, and the fleet's
//! overview. Everyone reads their own; reading another user's, or the
//! overview, takes an active administrator, as the users service has the
//! caller's record now (a token's role is as old as the token).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use fleet_kit::grpc::FreshChannel;
use fleet_kit::{
    SharedClock,
    error::{Violations, internal, invalid_argument},
    structs::{from_struct, to_struct},
    time::to_timestamp,
    token::{require_identity, require_user},
};
use fleet_proto::{
    stats::v1::{
        ActivityEntry, ActivityPage, DailyCount, DailyLogins, ExportActivityRequest, GetOverviewRequest,
        GetSessionStatsRequest, GetUserStatsRequest, ImportActivityRequest, ImportActivityResult, ListActivityRequest,
        Overview, SessionStats, UserAgentCount, UserStats, stats_service_server::StatsService,
    },
    users::v1::{GetMeRequest, users_service_client::UsersServiceClient},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{ActivityQuery, EntryRow, MICROS_PER_DAY, StatsStore, instant, micros};

const DEFAULT_LIMIT: u32 = 20;
/// Entries read per statement of an export: large enough to amortise the
/// round trip, small enough that a stream holds little at a time.
const EXPORT_PAGE: i64 = 500;
/// The range an activity page covers when the request names none.
const DEFAULT_RANGE_DAYS: i64 = 30;

/// The stats RPCs.
#[derive(Clone)]
pub struct StatsApi {
    store: Arc<dyn StatsStore>,
    users: FreshChannel,
    clock: SharedClock,
}

impl StatsApi {
    /// The service over `store`, asking `users` who is an administrator.
    pub fn new(store: Arc<dyn StatsStore>, users: FreshChannel, clock: SharedClock) -> Self {
        Self { store, users, clock }
    }

    /// Whose figures a request reads: the caller's, or, for an active
    /// administrator, the user it names.
    async fn subject<T>(&self, request: &Request<T>, asked: &str) -> Result<Uuid, Status> {
        if require_identity(request)?.is_service() {
            // A service (it holds the fleet's service secret) acts for the
            // user it names, as the users service lets it.
            if asked.is_empty() {
                let mut v = Violations::new();
                v.add("user_id", "is required when a service calls");
                return Err(invalid_argument(&v));
            }
            return parse_uuid("user_id", asked);
        }
        let (caller, _) = require_user(request)?;
        if asked.is_empty() {
            return Ok(caller);
        }
        let asked = parse_uuid("user_id", asked)?;
        if asked != caller {
            self.require_admin(request).await?;
        }
        Ok(asked)
    }

    /// Refuses a caller who is not an active administrator now: the users
    /// service reads the caller's own record with the caller's own token.
    async fn require_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let mut me = Request::new(GetMeRequest {});
        if let Some(token) = request.metadata().get("authorization") {
            me.metadata_mut().insert("authorization", token.clone());
        }
        let me = UsersServiceClient::new(self.users.clone())
            .get_me(me)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::NotFound => {
                    Status::permission_denied("only administrators may read another user's figures")
                }
                _ => Status::unavailable("the users service could not confirm the caller's rights"),
            })?
            .into_inner();
        let admin = me.role.as_deref() == Some("admin") && me.status.as_deref() == Some("active");
        if admin {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "only administrators may read another user's figures",
            ))
        }
    }
}

fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| {
        let mut v = Violations::new();
        v.add(field, "must be a UUID");
        invalid_argument(&v)
    })
}

/// A date-time the field rules already checked; `None` when empty.
fn parse_instant(v: &mut Violations, field: &str, raw: &str) -> Option<DateTime<Utc>> {
    if raw.is_empty() {
        return None;
    }
    v.check(field, DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)))
}

/// `[from, to)` of a request: `to` defaults to now, `from` to 30 days
/// before. A range that ends before it starts holds nothing.
fn range(from: &str, to: &str, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let mut v = Violations::new();
    let from_at = parse_instant(&mut v, "from", from);
    let to_at = parse_instant(&mut v, "to", to);
    v.into_result().map_err(|v| invalid_argument(&v))?;
    let to = to_at.unwrap_or(now);
    let from = from_at.unwrap_or(to - Duration::days(DEFAULT_RANGE_DAYS));
    Ok((from, to.max(from)))
}

/// Cursors are opaque: the last entry's position, base64url.
fn encode_cursor(row: &EntryRow) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&row.occurred_us.to_be_bytes());
    bytes.extend_from_slice(row.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(raw: &str) -> Option<(i64, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let (at, id) = bytes.split_at_checked(8)?;
    Some((i64::from_be_bytes(at.try_into().ok()?), Uuid::from_slice(id).ok()?))
}

fn day_name(day: i64) -> String {
    DateTime::from_timestamp(day * (MICROS_PER_DAY / 1_000_000), 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn entry(row: EntryRow) -> ActivityEntry {
    let details = serde_json::from_str::<serde_json::Map<_, _>>(&row.details).unwrap_or_default();
    ActivityEntry {
        id: row.id.to_string(),
        kind: row.kind,
        occurred_at: Some(to_timestamp(instant(row.occurred_us))),
        ip: row.ip,
        user_agent: row.user_agent,
        details: Some(to_struct(details)),
    }
}

/// The most entries one import call may carry.
const IMPORT_BATCH: usize = 1000;

/// An imported entry as the log keeps it: only its own fields (no session
/// is derived from an imported entry), every problem named by its place.
fn imported(v: &mut Violations, user_id: Uuid, index: usize, e: ActivityEntry) -> Option<crate::projection::Entry> {
    let field = |name: &str| format!("entries[{index}].{name}");
    let id = v.check(&field("id"), Uuid::parse_str(&e.id));
    let occurred_at = e.occurred_at.as_ref().and_then(fleet_kit::time::from_timestamp);
    if occurred_at.is_none() {
        v.add(field("occurred_at"), "must be a time");
    }
    let kind_ok = !e.kind.is_empty()
        && e.kind.len() <= 64
        && e.kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
    if !kind_ok {
        v.add(field("kind"), "must be an event type such as auth.login_succeeded");
    }
    if e.ip.len() > 64 {
        v.add(field("ip"), "must be at most 64 characters");
    }
    if e.user_agent.len() > 512 {
        v.add(field("user_agent"), "must be at most 512 characters");
    }
    Some(crate::projection::Entry {
        id: id?,
        user_id,
        kind: e.kind,
        occurred_at: occurred_at?,
        ip: e.ip,
        user_agent: e.user_agent,
        details: serde_json::Value::Object(e.details.map(from_struct).unwrap_or_default()),
        session: None,
    })
    .filter(|_| kind_ok)
}

fn store_error(err: anyhow::Error) -> Status {
    internal(&err)
}

/// A user's whole log, oldest first, a page at a time: the next page is read
/// only when the previous one was taken, so the reader's pace holds it, and
/// dropping the stream (the caller went away) ends the reading.
fn export_stream(
    store: Arc<dyn StatsStore>,
    user_id: Uuid,
) -> impl futures::Stream<Item = Result<ActivityEntry, Status>> + Send + 'static {
    use futures::{TryStreamExt, stream};
    let pages = stream::try_unfold(Some((i64::MIN, Uuid::nil())), move |after| {
        let store = store.clone();
        async move {
            let Some(after) = after else {
                return Ok::<_, Status>(None);
            };
            let rows = store
                .export_page(user_id, after, EXPORT_PAGE)
                .await
                .map_err(store_error)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let next = (rows.len() as i64 == EXPORT_PAGE)
                .then(|| rows.last().map(|r| (r.occurred_us, r.id)))
                .flatten();
            Ok(Some((rows, next)))
        }
    });
    pages
        .map_ok(|rows| stream::iter(rows.into_iter().map(|row| Ok::<_, Status>(entry(row)))))
        .try_flatten()
}

#[tonic::async_trait]
impl StatsService for StatsApi {
    type ExportActivityStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<ActivityEntry, Status>> + Send + 'static>>;

    async fn import_activity(
        &self,
        request: Request<ImportActivityRequest>,
    ) -> Result<Response<ImportActivityResult>, Status> {
        let user_id = self.subject(&request, &request.get_ref().user_id).await?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.entries.len() > IMPORT_BATCH {
            v.add("entries", format!("must hold at most {IMPORT_BATCH} entries"));
            return Err(invalid_argument(&v));
        }
        let entries: Vec<_> = req
            .entries
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| imported(&mut v, user_id, i, e))
            .collect();
        v.into_result().map_err(|v| invalid_argument(&v))?;
        let outcomes = self
            .store
            .write_entries(&entries, self.clock.now(), !req.dry_run)
            .await
            .map_err(store_error)?;
        let imported = outcomes.iter().filter(|o| **o == crate::store::Recorded::Added).count();
        Ok(Response::new(ImportActivityResult {
            imported: imported as u64,
            skipped: (outcomes.len() - imported) as u64,
        }))
    }

    async fn export_activity(
        &self,
        request: Request<ExportActivityRequest>,
    ) -> Result<Response<Self::ExportActivityStream>, Status> {
        let user_id = self.subject(&request, &request.get_ref().user_id).await?;
        Ok(Response::new(Box::pin(export_stream(self.store.clone(), user_id))))
    }

    async fn get_user_stats(&self, request: Request<GetUserStatsRequest>) -> Result<Response<UserStats>, Status> {
        let user_id = self.subject(&request, &request.get_ref().user_id).await?;
        let figures = self.store.user_figures(user_id).await.map_err(store_error)?;
        let now = self.clock.now();
        let age_days = figures
            .created_us
            .map_or(0, |created| (micros(now) - created) / MICROS_PER_DAY);
        Ok(Response::new(UserStats {
            user_id: user_id.to_string(),
            logins_total: count(figures.logins),
            failed_logins_total: count(figures.failed_logins),
            last_login_at: figures.last_login_us.map(|us| to_timestamp(instant(us))),
            active_sessions: count(figures.active_sessions),
            events_total: count(figures.events),
            account_age_days: count(age_days),
        }))
    }

    async fn list_activity(&self, request: Request<ListActivityRequest>) -> Result<Response<ActivityPage>, Status> {
        let user_id = self.subject(&request, &request.get_ref().user_id).await?;
        let req = request.into_inner();
        let (from, to) = range(&req.from, &req.to, self.clock.now())?;
        let before = if req.cursor.is_empty() {
            (micros(to), Uuid::nil())
        } else {
            decode_cursor(&req.cursor).ok_or_else(|| {
                let mut v = Violations::new();
                v.add("cursor", "must be a next_cursor this API returned");
                invalid_argument(&v)
            })?
        };
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        let kind = (!req.kind.is_empty()).then_some(req.kind);
        let mut rows = self
            .store
            .activity(&ActivityQuery {
                user_id,
                kind: kind.clone(),
                from_us: micros(from),
                before,
                limit: i64::from(limit) + 1,
            })
            .await
            .map_err(store_error)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(encode_cursor) } else { None };
        let daily = self
            .store
            .daily(user_id, kind.as_deref(), micros(from), micros(to))
            .await
            .map_err(store_error)?;
        Ok(Response::new(ActivityPage {
            items: rows.into_iter().map(entry).collect(),
            next_cursor,
            daily: daily
                .into_iter()
                .map(|(day, n)| DailyCount {
                    date: day_name(day),
                    count: count(n),
                })
                .collect(),
        }))
    }

    async fn get_session_stats(
        &self,
        request: Request<GetSessionStatsRequest>,
    ) -> Result<Response<SessionStats>, Status> {
        let user_id = self.subject(&request, &request.get_ref().user_id).await?;
        let figures = self.store.session_figures(user_id).await.map_err(store_error)?;
        #[allow(clippy::cast_precision_loss)] // durations far below 2^52 µs
        let average = if figures.ended > 0 {
            figures.ended_duration_us as f64 / figures.ended as f64 / 1e6
        } else {
            0.0
        };
        Ok(Response::new(SessionStats {
            active: count(figures.active),
            total: count(figures.total),
            revoked: count(figures.ended),
            average_duration_seconds: average,
            by_user_agent: figures
                .by_user_agent
                .into_iter()
                .map(|(user_agent, n)| UserAgentCount {
                    user_agent,
                    count: count(n),
                })
                .collect(),
        }))
    }

    async fn get_overview(&self, request: Request<GetOverviewRequest>) -> Result<Response<Overview>, Status> {
        require_user(&request)?;
        self.require_admin(&request).await?;
        let now = self.clock.now();
        let req = request.get_ref();
        let (from, to) = range(&req.from, &req.to, now)?;
        let figures = self.store.fleet_figures(from, to, now).await.map_err(store_error)?;
        let [active_1d, active_7d, active_30d] = figures.active.map(count);
        Ok(Response::new(Overview {
            users_total: count(figures.users),
            active_users_1d: active_1d,
            active_users_7d: active_7d,
            active_users_30d: active_30d,
            days: figures
                .days
                .into_iter()
                .map(|(day, logins, failed)| DailyLogins {
                    date: day_name(day),
                    logins: count(logins),
                    failed_logins: count(failed),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let row = EntryRow {
            id: Uuid::now_v7(),
            kind: String::new(),
            occurred_us: 1_800_000_000_123_456,
            ip: String::new(),
            user_agent: String::new(),
            details: String::new(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&row)), Some((row.occurred_us, row.id)));
        for bad in ["", "nope", "AAAA", &URL_SAFE_NO_PAD.encode([0u8; 23])] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_are_named_in_utc() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(1_800_000_000 / 86_400), "2027-01-15");
    }

    #[test]
    fn ranges_default_and_a_backwards_one_is_empty() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(range("", "", now).unwrap(), (now - Duration::days(30), now));
        let (from, to) = range("2027-01-15T00:00:00Z", "2027-01-14T00:00:00Z", now).unwrap();
        assert_eq!(from, to, "nothing is in [from, from)");
        let status = range("yesterday", "soon", now).unwrap_err();
        let fields: Vec<String> = fleet_kit::error::field_violations(&status)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["from", "to"]);
    }
}
