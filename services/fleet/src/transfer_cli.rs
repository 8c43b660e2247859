//! `fleet export` and `fleet import`: data-subject requests from an
//! operator's shell, against the running fleet. They call the services
//! directly (auth for a service token, with `tokens.service_secret`; users
//! to find the account; transfer for the work), so what they do is what
//! the API does, recorded as asked by `service:operator`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use fleet_proto::{
    auth::v1::{IssueServiceTokenRequest, auth_service_client::AuthServiceClient},
    google::api::HttpBody,
    transfer::v1::{ExportRequest, ImportRequest, transfer_service_client::TransferServiceClient},
    users::v1::{GetUserByEmailRequest, users_service_client::UsersServiceClient},
};
use indicatif::{ProgressBar, ProgressStyle};
use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use crate::config::FleetConfig;

/// The name the commands' service token carries.
const NAME: &str = "operator";

/// Who the commands are, to the fleet: a bearer value from auth.
async fn bearer(config: &FleetConfig) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    let secret = fleet_kit::secret::configured_or_file(
        &config.tokens.service_secret,
        &config.data_dir.join("service.key"),
        "tokens.service_secret",
    )?;
    let channel = Endpoint::from_shared(config.auth.service.url.clone())?
        .connect()
        .await
        .with_context(|| format!("reaching auth at {}", config.auth.service.url))?;
    let token = AuthServiceClient::new(channel)
        .issue_service_token(IssueServiceTokenRequest {
            name: NAME.into(),
            secret: secret.expose().to_string(),
        })
        .await
        .context("asking auth for a service token (is tokens.service_secret the fleet's?)")?
        .into_inner()
        .token;
    Ok(format!("Bearer {token}").parse()?)
}

fn authed<T>(bearer: &MetadataValue<tonic::metadata::Ascii>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", bearer.clone());
    request
}

/// The id of the account with `email`.
async fn account(
    config: &FleetConfig,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    email: &str,
) -> anyhow::Result<String> {
    let channel = Endpoint::from_shared(config.users.url.clone())?
        .connect()
        .await
        .with_context(|| format!("reaching users at {}", config.users.url))?;
    let request = GetUserByEmailRequest { email: email.into() };
    match UsersServiceClient::new(channel)
        .get_user_by_email(authed(bearer, request))
        .await
    {
        Ok(user) => Ok(user.into_inner().id),
        Err(status) if status.code() == tonic::Code::NotFound => bail!("no account has the email {email}"),
        Err(status) => Err(status).context("finding the account"),
    }
}

async fn transfer(config: &FleetConfig) -> anyhow::Result<TransferServiceClient<tonic::transport::Channel>> {
    let url = &config.transfer.service.url;
    let channel = Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .with_context(|| format!("reaching transfer at {url}"))?;
    Ok(TransferServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Writes the export of the account with `email` to `out` (a file, written
/// whole or not at all) or to standard output, with progress on stderr.
pub async fn export(config: &FleetConfig, email: &str, format: &str, out: Option<PathBuf>) -> anyhow::Result<()> {
    let bearer = bearer(config).await?;
    let user_id = account(config, &bearer, email).await?;
    let request = ExportRequest {
        format: format.into(),
        user_id,
    };
    let mut parts = transfer(config)
        .await?
        .export(authed(&bearer, request))
        .await
        .context("starting the export")?
        .into_inner();
    let bar = spinner(format!("exporting {email}"));
    let partial = out.as_ref().map(|path| path.with_extension("partial"));
    let mut sink: Box<dyn Write> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let written = async {
        while let Some(part) = parts.message().await.context("reading the export")? {
            sink.write_all(&part.data)?;
            bar.inc(part.data.len() as u64);
        }
        sink.flush()?;
        anyhow::Ok(())
    }
    .await;
    drop(sink);
    bar.finish_and_clear();
    match (written, partial, out) {
        (Ok(()), Some(partial), Some(out)) => {
            std::fs::rename(&partial, &out).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("exported {email} to {} ({} bytes)", out.display(), bar.position());
            Ok(())
        }
        (Ok(()), ..) => Ok(()),
        (Err(err), partial, _) => {
            if let Some(partial) = partial {
                let _ = std::fs::remove_file(partial);
            }
            Err(err)
        }
    }
}

/// The media type of a document: by its name, else by its first byte.
fn media_type(path: &Path, bytes: &[u8]) -> &'static str {
    let by_name = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match by_name.as_deref() {
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        _ if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => "application/json",
        _ => "text/csv",
    }
}

/// Imports `file` into the account with `email`, and prints the counts.
pub async fn import(config: &FleetConfig, email: &str, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let bearer = bearer(config).await?;
    let user_id = account(config, &bearer, email).await?;
    let bar = spinner(format!("importing {} into {email}:", file.display()));
    bar.set_position(data.len() as u64);
    let request = ImportRequest {
        document: Some(HttpBody {
            content_type: media_type(file, &data).into(),
            data,
            extensions: Vec::new(),
        }),
        dry_run,
        user_id,
    };
    let answer = transfer(config).await?.import(authed(&bearer, request)).await;
    bar.finish_and_clear();
    let result = match answer {
        Ok(result) => result.into_inner(),
        Err(status) => {
            let problems = fleet_kit::error::field_violations(&status);
            for problem in &problems {
                eprintln!("{}: {}", problem.field, problem.message);
            }
            bail!("the import was refused: {}", status.message());
        }
    };
    let counts = serde_json::json!({
        "profile_updated": result.profile_updated,
        "activity_imported": result.activity_imported,
        "activity_skipped": result.activity_skipped,
        "dry_run": dry_run,
    });
    println!("{counts}");
    Ok(())
}
