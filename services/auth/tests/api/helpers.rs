//! A whole auth + users stack per test: real gRPC servers on 127.0.0.1:0,
//! fresh stores on the chosen backend, an in-process bus and a manual clock.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::Utc;
use fleet_auth::{AuthSettings, HashingPool, SealingKey};
use fleet_kit::{
    Db,
    clock::ManualClock,
    events::{EventPublisher, InProcessBus},
    grpc::FreshChannel,
    revocation::RevokedSessions,
    testing::{TcpRelay, TestBackend, TestDatabase, database},
    token::{GrpcKeySource, TokenSettings, TokenVerifier},
};
use fleet_proto::{
    auth::v1::{LoginRequest, LoginResponse, RegisterRequest, auth_service_client::AuthServiceClient},
    users::v1::{User, users_service_client::UsersServiceClient},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Stack {
    pub auth: AuthServiceClient<Channel>,
    pub users: UsersServiceClient<Channel>,
    pub clock: ManualClock,
    pub bus: InProcessBus,
    pub auth_db: Db,
    pub users_db: Db,
    /// The auth service's password-hashing pool.
    pub hashing: Arc<HashingPool>,
    /// Auth's link to users, to cut for an outage.
    pub users_link: TcpRelay,
    shutdown: CancellationToken,
    _databases: (TestDatabase, TestDatabase),
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {addr} never came up");
}

impl Stack {
    pub async fn start(backend: TestBackend) -> Option<Stack> {
        Self::start_with(backend, AuthSettings::default()).await
    }

    pub async fn start_with(backend: TestBackend, settings: AuthSettings) -> Option<Stack> {
        let users_database = database(backend).await?;
        let auth_database = database(backend).await?;
        let users_db = Db::connect(&users_database.url, "users").await.unwrap();
        let auth_db = Db::connect(&auth_database.url, "auth").await.unwrap();
        fleet_users::migrate(&users_db).await.unwrap();
        fleet_auth::migrate(&auth_db).await.unwrap();

        let clock = ManualClock::new(Utc::now());
        let bus = InProcessBus::default();
        let publisher: Arc<dyn EventPublisher> = Arc::new(bus.clone());
        let revoked = RevokedSessions::new();
        revoked.follow(bus.subscribe(), Arc::new(clock.clone()));
        let shutdown = CancellationToken::new();
        let (users_listener, users_addr) = listener().await;
        let (auth_listener, auth_addr) = listener().await;
        let lazy = |addr: SocketAddr| FreshChannel::lazy(Endpoint::from_shared(format!("http://{addr}")).unwrap());

        let verifier = Arc::new(TokenVerifier::new(
            TokenSettings::default(),
            Arc::new(GrpcKeySource::new(lazy(auth_addr))),
            Arc::new(clock.clone()),
            revoked.clone(),
        ));
        let users_deps = fleet_users::Deps {
            db: users_db.clone(),
            bus: publisher.clone(),
            clock: Arc::new(clock.clone()),
            verifier,
        };
        tokio::spawn(fleet_users::serve(users_deps, users_listener, shutdown.clone()));
        let users_link = TcpRelay::start(&users_addr.to_string()).await;
        let relayed: SocketAddr = ([127, 0, 0, 1], users_link.port).into();
        let hashing = HashingPool::start(&settings.hashing, Default::default()).unwrap();
        let auth_deps = fleet_auth::Deps {
            development: false,
            db: auth_db.clone(),
            bus: publisher,
            events: Some(bus.subscribe()),
            clock: Arc::new(clock.clone()),
            tokens: TokenSettings::default(),
            settings,
            users: lazy(relayed),
            revoked,
            sealing: Arc::new(SealingKey::from_base64(&SealingKey::generate_base64().unwrap()).unwrap()),
            metrics: Default::default(),
            hashing: hashing.clone(),
        };
        tokio::spawn(fleet_auth::serve(auth_deps, auth_listener, shutdown.clone()));

        Some(Stack {
            auth: AuthServiceClient::new(channel(auth_addr).await),
            users: UsersServiceClient::new(channel(users_addr).await),
            clock,
            bus,
            auth_db,
            users_db,
            hashing,
            users_link,
            shutdown,
            _databases: (users_database, auth_database),
        })
    }

    pub async fn register(&self, email: &str, name: &str) -> User {
        self.auth
            .clone()
            .register(RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    pub async fn login_with(&self, email: &str, password: &str) -> Result<LoginResponse, Status> {
        self.auth
            .clone()
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn login(&self, email: &str) -> LoginResponse {
        self.login_with(email, PASSWORD).await.unwrap()
    }

    /// Registers and logs in; returns the user and an access token.
    pub async fn signed_in(&self, email: &str, name: &str) -> (User, String) {
        let user = self.register(email, name).await;
        let tokens = self.login(email).await;
        (user, tokens.access_token)
    }

    /// Promotes a user the way `fleet user promote` does, then logs in again.
    pub async fn admin(&self, email: &str) -> String {
        self.register(email, "Admin").await;
        let store = fleet_users::store::user_store(&self.users_db);
        let user = store
            .get_by_email(&fleet_users::domain::Email::parse(email).unwrap())
            .await
            .unwrap()
            .unwrap();
        let patch = fleet_users::store::UserPatch {
            role: Some(fleet_users::domain::Role::Admin),
            ..Default::default()
        };
        // On the stack's clock: sessions started after the change keep the new role.
        store.update(user.id, patch, self.clock_now()).await.unwrap();
        self.login(email).await.access_token
    }
}

/// A request carrying `token` as its bearer.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// The fields of a status's BadRequest details.
pub fn violated_fields(status: &Status) -> Vec<String> {
    fleet_kit::error::field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

impl Stack {
    /// The stack's current time.
    pub fn clock_now(&self) -> chrono::DateTime<Utc> {
        fleet_kit::Clock::now(&self.clock)
    }
}
