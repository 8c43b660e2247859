//! SMS codes as an optional second factor, behind a sender port. Built in:
//! a development sender that writes the message to the log, and a webhook
//! sender that posts it to a configured URL (an SMS gateway or a relay).

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use fleet_kit::secret::Secret;
use serde::{Deserialize, Serialize};

/// Which sender delivers the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderKind {
    /// Writes the message to the log: development only.
    Log,
    /// Posts `{"to","body"}` as JSON to `webhook_url`.
    Webhook,
}

/// SMS settings; off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmsSettings {
    /// Offer SMS codes at all.
    pub enabled: bool,
    /// How codes are delivered; named explicitly, there is no default.
    pub sender: Option<SenderKind>,
    /// Where the webhook sender posts.
    pub webhook_url: String,
    /// Sent as `Authorization: Bearer …` to the webhook, when set.
    pub webhook_token: Secret,
    /// How long a code is good for, seconds.
    pub code_ttl_secs: u32,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            sender: None,
            webhook_url: String::new(),
            webhook_token: Secret::default(),
            code_ttl_secs: 600,
        }
    }
}

/// Delivers a text message.
#[async_trait::async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// Sends `body` to the E.164 number `to`; `Ok` once the provider took it.
    async fn send(&self, to: &str, body: &str) -> anyhow::Result<()>;
}

/// The development sender: the message goes to the log, under its own target.
#[derive(Debug, Default)]
pub struct LogSender;

#[async_trait::async_trait]
impl SmsSender for LogSender {
    async fn send(&self, to: &str, body: &str) -> anyhow::Result<()> {
        tracing::warn!(target: "fleet_auth::sms_outbox", to, body, "SMS (development sender; not delivered)");
        Ok(())
    }
}

/// Posts each message to a URL.
#[derive(Debug)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Secret,
}

impl WebhookSender {
    /// A sender posting to `url`.
    pub fn new(url: &str, token: Secret) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(url).with_context(|| format!("the SMS webhook URL {url:?} is invalid"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("the SMS webhook URL must be http or https");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the SMS webhook client")?;
        Ok(Self { client, url, token })
    }
}

#[async_trait::async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, to: &str, body: &str) -> anyhow::Result<()> {
        let mut request = self
            .client
            .post(self.url.clone())
            .json(&serde_json::json!({ "to": to, "body": body }));
        if !self.token.expose().is_empty() {
            request = request.bearer_auth(self.token.expose());
        }
        let response = request.send().await.context("posting to the SMS webhook")?;
        if !response.status().is_success() {
            bail!("the SMS webhook answered {}", response.status());
        }
        Ok(())
    }
}

/// The configured sender, or `None` when SMS is off. The `log` sender
/// writes live codes and phone numbers to the log: it is refused unless
/// `development` is on.
pub fn sender(settings: &SmsSettings, development: bool) -> anyhow::Result<Option<Arc<dyn SmsSender>>> {
    if !settings.enabled {
        return Ok(None);
    }
    let Some(kind) = settings.sender else {
        bail!("auth.mfa.sms.enabled needs auth.mfa.sms.sender: webhook (or log, in development)");
    };
    Ok(Some(match kind {
        SenderKind::Log if !development => bail!(
            "auth.mfa.sms.sender = log writes codes and phone numbers to the log; it is refused unless development = true"
        ),
        SenderKind::Log => Arc::new(LogSender),
        SenderKind::Webhook => Arc::new(WebhookSender::new(
            &settings.webhook_url,
            settings.webhook_token.clone(),
        )?),
    }))
}

/// A phone number in E.164 form (`+` and 8 to 15 digits), spaces and
/// dashes removed; `None` if it is not one.
pub fn normalize_phone(typed: &str) -> Option<String> {
    let phone: String = typed.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = phone.strip_prefix('+')?;
    let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    ok.then_some(phone)
}

/// The number with all but its last two digits hidden, for messages.
pub fn masked_phone(phone: &str) -> String {
    let keep = phone.len().saturating_sub(2);
    phone
        .char_indices()
        .map(|(i, c)| if i == 0 || i >= keep { c } else { '•' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_e164() {
        assert_eq!(normalize_phone("+49 151 1234-5678").as_deref(), Some("+4915112345678"));
        assert_eq!(normalize_phone("015112345678"), None);
        assert_eq!(normalize_phone("+0123456789"), None);
        assert_eq!(normalize_phone("+12"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None);
        assert_eq!(masked_phone("+4915112345678"), "+•••••••••••78");
    }

    #[test]
    fn the_contract_accepts_exactly_the_numbers_that_normalize() {
        for typed in [
            "+4915112345678",
            "+49 151 1234-5678",
            "(+49) 151 12345678",
            "+1 (555) 010-9999",
            "015112345678",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+49 151 1234 567x",
            "",
            " ",
        ] {
            let contract = fleet_proto::rules::check_text("fleet.auth.v1.EnrollSmsRequest.phone", typed);
            assert_eq!(
                contract.is_none(),
                normalize_phone(typed).is_some(),
                "{typed:?}: {contract:?}"
            );
        }
    }

    #[test]
    fn the_webhook_sender_needs_an_http_url() {
        assert!(WebhookSender::new("ftp://x", Secret::default()).is_err());
        assert!(WebhookSender::new("not a url", Secret::default()).is_err());
        let off = SmsSettings::default();
        assert!(sender(&off, false).unwrap().is_none());
        let bad = SmsSettings {
            enabled: true,
            sender: Some(SenderKind::Webhook),
            ..SmsSettings::default()
        };
        assert!(sender(&bad, false).is_err(), "an enabled webhook sender needs its URL");
    }

    #[test]
    fn the_sender_is_named_explicitly_and_log_only_in_development() {
        let unnamed = SmsSettings {
            enabled: true,
            ..SmsSettings::default()
        };
        let err = sender(&unnamed, true).err().unwrap().to_string();
        assert!(err.contains("auth.mfa.sms.sender"), "{err}");
        let log = SmsSettings {
            sender: Some(SenderKind::Log),
            ..unnamed
        };
        let err = sender(&log, false).err().unwrap().to_string();
        assert!(err.contains("development"), "{err}");
        assert!(sender(&log, true).unwrap().is_some());
    }
}
