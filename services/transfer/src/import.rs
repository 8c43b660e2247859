//! Import: an export's document read back into an account. The whole
//! document is read and checked first; nothing is written unless all of it
//! is good. Then the profile (the display name: never credentials, role,
//! status, email or identity) goes to users and the activity log to stats,
//! a batch at a time, each entry keeping its id, so that importing the same
//! document again adds nothing, and a retry after a failure part way adds
//! only what is missing.

use fleet_kit::{
    error::{internal, invalid_argument},
    structs::to_struct,
    time::to_timestamp,
};
use fleet_proto::{
    stats::v1::{ActivityEntry, ImportActivityRequest, stats_service_client::StatsServiceClient},
    transfer::v1::{ImportRequest, ImportResult},
    users::v1::{UpdateMeRequest, UpdateUserRequest, users_service_client::UsersServiceClient},
};
use futures::StreamExt;
use tonic::{Request, Status};
use uuid::Uuid;

use crate::{
    api::{Subject, TransferApi, on_behalf, user_id_of},
    document::ActivityRecord,
    reading,
    store::ImportRecord,
};

/// Entries per call to stats.
const BATCH: usize = 1000;
/// Calls to stats under way at once.
const BATCHES_IN_FLIGHT: usize = 4;

/// A document's entry as stats takes it (the document was checked: its
/// time is RFC 3339).
fn entry(record: &ActivityRecord) -> ActivityEntry {
    let occurred_at = chrono::DateTime::parse_from_rfc3339(&record.occurred_at)
        .map(|t| to_timestamp(t.to_utc()))
        .ok();
    ActivityEntry {
        id: record.id.clone(),
        kind: record.kind.clone(),
        occurred_at,
        ip: record.ip.clone(),
        user_agent: record.user_agent.clone(),
        details: Some(to_struct(record.details.clone())),
    }
}

impl TransferApi {
    pub(crate) async fn import_document(&self, mut request: Request<ImportRequest>) -> Result<ImportResult, Status> {
        let asked = user_id_of(&request.get_ref().user_id)?;
        let dry_run = request.get_ref().dry_run;
        // Taken out of the request, so that the text is freed once read.
        let document = request.get_mut().document.take().unwrap_or_default();
        let read = reading::read(&document.content_type, &document.data).map_err(|v| invalid_argument(&v))?;
        drop(document);
        let subject = self.subject(&request, asked).await?;

        let data = read.document.data.unwrap_or_default();
        let display_name = data.profile.unwrap_or_default().display_name;
        let profile_updated = display_name != subject.user.display_name;
        // Entries repeated in the document count once; the rest are skipped.
        let total = data.activity_log.len();
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<ActivityRecord> = data
            .activity_log
            .into_iter()
            .filter(|r| seen.insert(r.id.clone()))
            .collect();
        drop(seen);
        let repeated = (total - entries.len()) as u64;

        let mut result = ImportResult {
            profile_updated,
            activity_imported: 0,
            activity_skipped: repeated,
        };
        let outcome = self
            .write(&request, &subject, &display_name, &entries, dry_run, &mut result)
            .await;
        if !dry_run {
            let record = ImportRecord {
                id: Uuid::now_v7(),
                user_id: subject.id,
                requested_by: subject.requested_by.clone(),
                format: read.format.name().to_string(),
                completed: outcome.is_ok(),
                profile_updated: result.profile_updated,
                activity_imported: result.activity_imported,
                activity_skipped: result.activity_skipped,
            };
            self.store
                .record_import(&record, self.clock.now())
                .await
                .map_err(|e| internal(&e))?;
        }
        outcome.map(|()| result)
    }

    /// Writes the profile and the entries (or, on a dry run, counts what
    /// would be written), adding to `result` as it goes.
    async fn write<T>(
        &self,
        request: &Request<T>,
        subject: &Subject,
        display_name: &str,
        entries: &[ActivityRecord],
        dry_run: bool,
        result: &mut ImportResult,
    ) -> Result<(), Status> {
        if result.profile_updated && !dry_run {
            let mut users = UsersServiceClient::new(self.sources.users.clone());
            let display_name = Some(display_name.to_string());
            if subject.own {
                let update = UpdateMeRequest {
                    display_name,
                    ..Default::default()
                };
                users.update_me(on_behalf(request, update)).await?;
            } else {
                let update = UpdateUserRequest {
                    id: subject.id.to_string(),
                    display_name,
                    ..Default::default()
                };
                users.update_user(on_behalf(request, update)).await?;
            }
        }
        let user_id = subject.named();
        let stats = StatsServiceClient::new(self.sources.stats.clone());
        // Batches are transactions of their own, idempotent by entry id:
        // a few go at once, so that stats writes one while the next travels.
        // (By index: a closure taking borrowed chunks is not general enough
        // for the RPC's `Send` future.)
        let calls = (0..entries.len()).step_by(BATCH).map(|start| {
            let batch = &entries[start..entries.len().min(start + BATCH)];
            let call = ImportActivityRequest {
                user_id: user_id.clone(),
                entries: batch.iter().map(entry).collect(),
                dry_run,
            };
            let request = on_behalf(request, call);
            let mut stats = stats.clone();
            async move { stats.import_activity(request).await.map(tonic::Response::into_inner) }
        });
        let mut done = futures::stream::iter(calls).buffer_unordered(BATCHES_IN_FLIGHT);
        while let Some(batch) = done.next().await {
            let batch = batch?;
            result.activity_imported += batch.imported;
            result.activity_skipped += batch.skipped;
        }
        Ok(())
    }
}
