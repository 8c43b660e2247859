//! The transfer RPCs. An export reads the user's data from the services
//! that own it, with the caller's own token, so each of them decides what
//! the caller may see; the document is streamed as it is read.

use std::sync::Arc;

use fleet_kit::grpc::FreshChannel;
use fleet_kit::{
    SharedClock,
    error::{Violations, internal, invalid_argument},
    token::{Principal, SERVICE_SUBJECT_PREFIX, require_identity},
};
use fleet_proto::{
    auth::v1::{GetMfaStatusRequest, ListSessionsRequest, auth_service_client::AuthServiceClient},
    stats::v1::{ExportActivityRequest, stats_service_client::StatsServiceClient},
    transfer::v1::{ExportRequest, ImportRequest, ImportResult, transfer_service_server::TransferService},
    users::v1::{GetMeRequest, GetUserRequest, User, users_service_client::UsersServiceClient},
};
use tonic::{Request, Response, Status, metadata::MetadataValue};
use uuid::Uuid;

use crate::{
    document::{self, Head, MfaRecord, Profile, SessionRecord},
    store::{NewExport, TransferStore},
    stream::{self, BodyStream, Format, Run},
};

/// The services an export reads from.
#[derive(Clone)]
pub struct Sources {
    /// The users service (profiles).
    pub users: FreshChannel,
    /// The auth service (sessions, second factors).
    pub auth: FreshChannel,
    /// The stats service (the activity log).
    pub stats: FreshChannel,
}

/// The transfer RPCs.
#[derive(Clone)]
pub struct TransferApi {
    pub(crate) store: Arc<dyn TransferStore>,
    pub(crate) sources: Sources,
    pub(crate) clock: SharedClock,
}

/// A request to another service on the caller's behalf: the caller's token
/// and the trace go along.
pub(crate) fn on_behalf<T, M>(caller: &Request<T>, message: M) -> Request<M> {
    let mut request = Request::new(message);
    if let Some(token) = caller.metadata().get("authorization") {
        request.metadata_mut().insert("authorization", token.clone());
    }
    fleet_kit::trace::inject_metadata(request.metadata_mut());
    request
}

pub(crate) fn user_id_of(user_id: &str) -> Result<Option<Uuid>, Status> {
    if user_id.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(user_id).map(Some).map_err(|_| {
        let mut v = Violations::new();
        v.add("user_id", "must be a UUID");
        invalid_argument(&v)
    })
}

impl TransferApi {
    /// The service over `store`, reading from `sources`.
    pub fn new(store: Arc<dyn TransferStore>, sources: Sources, clock: SharedClock) -> Self {
        Self { store, sources, clock }
    }

    /// Whose data a call is about: the calling user's own, or the user it
    /// names for an active administrator now or for a service (which must
    /// name one), with their profile as the caller may see it.
    pub(crate) async fn subject<T>(&self, request: &Request<T>, asked: Option<Uuid>) -> Result<Subject, Status> {
        let identity = require_identity(request)?;
        let mut users = UsersServiceClient::new(self.sources.users.clone());
        let requested_by = match &identity.principal {
            Principal::User { id, .. } => id.to_string(),
            Principal::Service { name } => format!("{SERVICE_SUBJECT_PREFIX}{name}"),
        };
        let named = |id: Uuid| GetUserRequest { id: id.to_string() };
        if identity.is_service() {
            let Some(asked) = asked else {
                let mut v = Violations::new();
                v.add("user_id", "is required when a service calls");
                return Err(invalid_argument(&v));
            };
            let user = users.get_user(on_behalf(request, named(asked))).await?.into_inner();
            return Subject::of(user, false, requested_by);
        }
        let me = users.get_me(on_behalf(request, GetMeRequest {})).await?.into_inner();
        let caller = identity.user_id();
        let Some(asked) = asked.filter(|id| Some(*id) != caller) else {
            return Subject::of(me, true, requested_by);
        };
        let admin = me.role.as_deref() == Some("admin") && me.status.as_deref() == Some("active");
        if !admin {
            return Err(Status::permission_denied("only administrators may name another user"));
        }
        let user = users.get_user(on_behalf(request, named(asked))).await?.into_inner();
        Subject::of(user, false, requested_by)
    }
}

/// Whose data a call reads or writes.
pub(crate) struct Subject {
    /// Their profile.
    pub user: User,
    /// Their id.
    pub id: Uuid,
    /// Whether it is the calling user.
    pub own: bool,
    /// Who asked: a user's id, or `service:<name>`.
    pub requested_by: String,
}

impl Subject {
    fn of(user: User, own: bool, requested_by: String) -> Result<Self, Status> {
        let id = Uuid::parse_str(&user.id).map_err(|_| Status::internal("the users service named no id"))?;
        Ok(Self {
            user,
            id,
            own,
            requested_by,
        })
    }

    /// The `user_id` of a request to another service about them: empty
    /// for the caller's own.
    pub fn named(&self) -> String {
        if self.own { String::new() } else { self.id.to_string() }
    }
}

#[tonic::async_trait]
impl TransferService for TransferApi {
    type ExportStream = BodyStream;

    async fn import(&self, request: Request<ImportRequest>) -> Result<Response<ImportResult>, Status> {
        self.import_document(request).await.map(Response::new)
    }

    async fn export(&self, request: Request<ExportRequest>) -> Result<Response<BodyStream>, Status> {
        let asked = user_id_of(&request.get_ref().user_id)?;
        let Some(format) = Format::parse(&request.get_ref().format) else {
            let mut v = Violations::new();
            v.add("format", "must be json or csv");
            return Err(invalid_argument(&v));
        };
        let subject = self.subject(&request, asked).await?;
        let user_id = subject.named();
        let mut auth = AuthServiceClient::new(self.sources.auth.clone());
        let sessions = auth
            .list_sessions(on_behalf(
                &request,
                ListSessionsRequest {
                    user_id: user_id.clone(),
                },
            ))
            .await?
            .into_inner();
        let mfa = auth
            .get_mfa_status(on_behalf(
                &request,
                GetMfaStatusRequest {
                    user_id: user_id.clone(),
                },
            ))
            .await?
            .into_inner();
        let activity = StatsServiceClient::new(self.sources.stats.clone())
            .export_activity(on_behalf(&request, ExportActivityRequest { user_id }))
            .await?
            .into_inner();

        let now = self.clock.now();
        let export = NewExport {
            id: Uuid::now_v7(),
            user_id: subject.id,
            requested_by: subject.requested_by.clone(),
            format: format.name().to_string(),
        };
        self.store.start_export(&export, now).await.map_err(|e| internal(&e))?;
        let head = Head {
            user_id: &subject.user.id,
            exported_at: document::rfc3339(now),
            format_version: document::FORMAT_VERSION,
            profile: &Profile::from(&subject.user),
            sessions: &sessions.items.iter().map(SessionRecord::from).collect::<Vec<_>>(),
            mfa: &MfaRecord::from(&mfa),
        };
        let run = Run::new(self.store.clone(), self.clock.clone(), export.id);
        let body = stream::body(format, &head, activity, run).map_err(|e| internal(&e))?;
        let mut response = Response::new(body);
        let filename = format!(
            "attachment; filename=\"fleet-export-{}-{}.{format}\"",
            subject.id,
            now.format("%Y-%m-%d"),
            format = format.name(),
        );
        if let Ok(value) = MetadataValue::try_from(filename) {
            response.metadata_mut().insert("content-disposition", value);
        }
        Ok(response)
    }
}
