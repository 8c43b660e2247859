//! The notify RPCs: the caller's feed, read marks, preferences, webhook
//! secret and deliveries. Everyone reaches only their own: another user's
//! notification is not found.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Duration;
use fleet_kit::{
    SharedClock,
    error::{Violations, internal, invalid_argument},
    structs::to_struct,
    time::to_timestamp,
    token::require_user,
};
use fleet_proto::notify::v1::{
    Delivery, DeliveryPage, GetPreferencesRequest, ListDeliveriesRequest, ListNotificationsRequest, MarkAllReadRequest,
    MarkReadRequest, Notification, NotificationPage, Preferences, RotateWebhookSecretRequest, UpdatePreferencesRequest,
    WebhookSecret, notify_service_server::NotifyService,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    kinds,
    store::{Account, DeliveryRow, FIRST, NewPreferences, NotificationRow, NotifyStore, instant},
    webhook::{WebhookSettings, check_url_resolving, new_secret},
};

const DEFAULT_LIMIT: u32 = 20;
/// How long the secret before a rotation keeps signing.
const ROTATION_OVERLAP: Duration = Duration::hours(24);

/// The notify RPCs.
#[derive(Clone)]
pub struct NotifyApi {
    store: Arc<dyn NotifyStore>,
    clock: SharedClock,
    webhooks: WebhookSettings,
}

impl NotifyApi {
    /// The service over `store`.
    pub fn new(store: Arc<dyn NotifyStore>, clock: SharedClock, webhooks: WebhookSettings) -> Self {
        Self { store, clock, webhooks }
    }
}

fn invalid(field: &str, message: &str) -> Status {
    let mut v = Violations::new();
    v.add(field, message);
    invalid_argument(&v)
}

/// Cursors are opaque: the last item's position, base64url.
fn encode_cursor(at_us: i64, id: Uuid) -> String {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&at_us.to_be_bytes());
    bytes.extend_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(raw: &str) -> Result<(i64, Uuid), Status> {
    if raw.is_empty() {
        return Ok(FIRST);
    }
    let decoded = URL_SAFE_NO_PAD.decode(raw).ok().and_then(|bytes| {
        let (at, id) = bytes.split_at_checked(8)?;
        Some((i64::from_be_bytes(at.try_into().ok()?), Uuid::from_slice(id).ok()?))
    });
    decoded.ok_or_else(|| invalid("cursor", "must be a next_cursor this API returned"))
}

/// A page of `rows` read with one more than `limit`: the rows, and the
/// cursor of the next page if there is one.
fn page<T>(mut rows: Vec<T>, limit: u32, position: impl Fn(&T) -> (i64, Uuid)) -> (Vec<T>, Option<String>) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|row| {
            let (at, id) = position(row);
            encode_cursor(at, id)
        })
    } else {
        None
    };
    (rows, next)
}

fn notification(row: NotificationRow) -> Notification {
    let data = serde_json::from_str::<serde_json::Map<_, _>>(&row.data).unwrap_or_default();
    Notification {
        id: row.id.to_string(),
        kind: row.kind,
        title: row.title,
        body: row.body,
        data: Some(to_struct(data)),
        created_at: Some(to_timestamp(instant(row.created_us))),
        read_at: row.read_us.map(|us| to_timestamp(instant(us))),
    }
}

fn delivery(row: DeliveryRow) -> Delivery {
    Delivery {
        id: format!("msg_{}", row.id.simple()),
        notification_id: row.notification_id.to_string(),
        channel: row.channel,
        status: row.status,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        response_code: u32::try_from(row.response_code).unwrap_or(0),
        latency_ms: u32::try_from(row.latency_ms).unwrap_or(0),
        error: row.error,
        created_at: Some(to_timestamp(instant(row.created_us))),
        last_attempt_at: row.last_attempt_us.map(|us| to_timestamp(instant(us))),
        next_attempt_at: row.next_attempt_us.map(|us| to_timestamp(instant(us))),
    }
}

/// The preferences an account has; the secret only when just set.
fn preferences(account: &Account, secret: Option<String>) -> Preferences {
    let muted = account.muted();
    Preferences {
        email: account.email_enabled,
        webhook_url: account.webhook_url.clone(),
        events: kinds::ALL
            .iter()
            .filter(|k| k.security || !muted.iter().any(|m| m == k.name))
            .map(|k| k.name.to_string())
            .collect(),
        webhook_secret: secret,
        webhook_disabled_at: account.webhook_disabled_us.map(|us| to_timestamp(instant(us))),
    }
}

#[tonic::async_trait]
impl NotifyService for NotifyApi {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<NotificationPage>, Status> {
        let (user_id, _) = require_user(&request)?;
        let req = request.get_ref();
        let before = decode_cursor(&req.cursor)?;
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        let (rows, unread) = self
            .store
            .feed(user_id, req.unread, before, i64::from(limit) + 1)
            .await
            .map_err(|e| internal(&e))?;
        let (rows, next_cursor) = page(rows, limit, |r| (r.created_us, r.id));
        Ok(Response::new(NotificationPage {
            items: rows.into_iter().map(notification).collect(),
            next_cursor,
            unread_count: u64::try_from(unread).unwrap_or(0),
        }))
    }

    async fn mark_read(&self, request: Request<MarkReadRequest>) -> Result<Response<()>, Status> {
        let (user_id, _) = require_user(&request)?;
        let id = Uuid::parse_str(&request.get_ref().id).map_err(|_| invalid("id", "must be a UUID"))?;
        let found = self
            .store
            .mark_read(user_id, id, self.clock.now())
            .await
            .map_err(|e| internal(&e))?;
        if found {
            Ok(Response::new(()))
        } else {
            Err(Status::not_found("no such notification"))
        }
    }

    async fn mark_all_read(&self, request: Request<MarkAllReadRequest>) -> Result<Response<()>, Status> {
        let (user_id, _) = require_user(&request)?;
        self.store
            .mark_all_read(user_id, self.clock.now())
            .await
            .map_err(|e| internal(&e))?;
        Ok(Response::new(()))
    }

    async fn get_preferences(&self, request: Request<GetPreferencesRequest>) -> Result<Response<Preferences>, Status> {
        let (user_id, _) = require_user(&request)?;
        let account = self.store.account(user_id).await.map_err(|e| internal(&e))?;
        Ok(Response::new(preferences(&account, None)))
    }

    async fn update_preferences(
        &self,
        request: Request<UpdatePreferencesRequest>,
    ) -> Result<Response<Preferences>, Status> {
        let (user_id, _) = require_user(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let mut wanted = Vec::with_capacity(req.events.len());
        for (i, name) in req.events.iter().enumerate() {
            match kinds::by_name(name) {
                Some(kind) => wanted.push(kind.name),
                None => v.add(
                    format!("events[{i}]"),
                    format!(
                        "must be one of {}",
                        kinds::ALL.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
        }
        let url = req.webhook_url.trim();
        if !url.is_empty()
            && let Err(why) = check_url_resolving(url, self.webhooks).await
        {
            v.add("webhook_url", why);
        }
        v.into_result().map_err(|v| invalid_argument(&v))?;
        // Kinds left out are switched off, except security ones, which
        // cannot be.
        let muted = kinds::ALL
            .iter()
            .filter(|k| !k.security && !wanted.contains(&k.name))
            .map(|k| k.name.to_string())
            .collect();
        let new = NewPreferences {
            email_enabled: req.email,
            muted,
            webhook_url: url.to_string(),
            new_secret: new_secret(),
        };
        let (account, secret_set) = self
            .store
            .set_preferences(user_id, &new)
            .await
            .map_err(|e| internal(&e))?;
        let secret = secret_set.then(|| account.webhook_secret.clone());
        Ok(Response::new(preferences(&account, secret)))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<WebhookSecret>, Status> {
        let (user_id, _) = require_user(&request)?;
        let secret = new_secret();
        let rotated = self
            .store
            .rotate_secret(user_id, &secret, self.clock.now() + ROTATION_OVERLAP)
            .await
            .map_err(|e| internal(&e))?;
        if !rotated {
            return Err(Status::failed_precondition("no webhook URL is set"));
        }
        Ok(Response::new(WebhookSecret { webhook_secret: secret }))
    }

    async fn list_deliveries(&self, request: Request<ListDeliveriesRequest>) -> Result<Response<DeliveryPage>, Status> {
        let (user_id, _) = require_user(&request)?;
        let req = request.get_ref();
        let before = decode_cursor(&req.cursor)?;
        let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
        let rows = self
            .store
            .deliveries(user_id, before, i64::from(limit) + 1)
            .await
            .map_err(|e| internal(&e))?;
        let (rows, next_cursor) = page(rows, limit, |r| (r.created_us, r.id));
        Ok(Response::new(DeliveryPage {
            items: rows.into_iter().map(delivery).collect(),
            next_cursor,
        }))
    }
}
