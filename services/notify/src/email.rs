//! Email, optional and off by default: SMTP through lettre (STARTTLS or
//! implicit TLS, as `notify.email.smtp_url` says), or a `log` sender for
//! development. Messages are plain text and HTML written from the same
//! notification as the webhook body; they queue in the same delivery store.

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use serde_json::Value;

/// How mail goes out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// No email.
    #[default]
    Off,
    /// Written to the log instead of sent (development).
    Log,
    /// Sent through `smtp_url`.
    Smtp,
}

/// Email settings (`notify.email.*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EmailSettings {
    /// `off`, `log` or `smtp`.
    pub sender: SenderKind,
    /// `smtps://user:pass@host:465` (implicit TLS),
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), or `smtp://host:25`
    /// (plain, for a relay on the same host).
    pub smtp_url: Option<fleet_kit::Secret>,
    /// The sender's mailbox.
    pub from: String,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            sender: SenderKind::Off,
            smtp_url: None,
            from: "Fleet <no-reply@localhost>".into(),
        }
    }
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// What went wrong.
    pub error: String,
    /// Retrying cannot help (a refused address, a bad message).
    pub permanent: bool,
}

/// Sends notification emails.
#[derive(Clone)]
pub enum Mailer {
    /// No email.
    Off,
    /// To the log.
    Log {
        /// The sender's mailbox.
        from: Mailbox,
    },
    /// Through an SMTP server.
    Smtp {
        /// The connection pool.
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// The sender's mailbox.
        from: Mailbox,
    },
}

impl Mailer {
    /// The mailer `settings` describe.
    pub fn new(settings: &EmailSettings) -> anyhow::Result<Self> {
        let from = || -> anyhow::Result<Mailbox> {
            settings
                .from
                .parse()
                .map_err(|err| anyhow::anyhow!("notify.email.from is not a mailbox: {err}"))
        };
        Ok(match settings.sender {
            SenderKind::Off => Mailer::Off,
            SenderKind::Log => Mailer::Log { from: from()? },
            SenderKind::Smtp => {
                let url = settings
                    .smtp_url
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("notify.email.sender = \"smtp\" needs notify.email.smtp_url"))?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|err| anyhow::anyhow!("notify.email.smtp_url: {err}"))?
                    .timeout(Some(std::time::Duration::from_secs(30)))
                    .build();
                Mailer::Smtp {
                    transport,
                    from: from()?,
                }
            }
        })
    }

    /// Whether mail is sent at all.
    pub fn enabled(&self) -> bool {
        !matches!(self, Mailer::Off)
    }

    /// Sends the notification in `payload` (a webhook body) to `to`.
    pub async fn send(&self, to: &str, payload: &str) -> Result<(), Failed> {
        let permanent = |error: String| Failed { error, permanent: true };
        let (subject, text, html) = render(payload).ok_or_else(|| permanent("the message is malformed".into()))?;
        let to: Mailbox = to
            .parse()
            .map_err(|_| permanent(format!("{to} is not an email address")))?;
        match self {
            Mailer::Off => Err(permanent("email is off".into())),
            Mailer::Log { from } => {
                tracing::info!(from = %from, to = %to, subject, text, "email (log sender)");
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(subject)
                    .multipart(MultiPart::alternative_plain_html(text, html))
                    .map_err(|err| permanent(format!("building the message: {err}")))?;
                transport.send(message).await.map(drop).map_err(|err| Failed {
                    permanent: err.is_permanent(),
                    error: format!("SMTP: {err}"),
                })
            }
        }
    }
}

/// Subject, plain text and HTML of a notification's webhook body.
pub fn render(payload: &str) -> Option<(String, String, String)> {
    let message: Value = serde_json::from_str(payload).ok()?;
    let data = message.get("data")?;
    let title = data.get("title")?.as_str()?;
    let body = data.get("body")?.as_str()?;
    let when = message.get("timestamp")?.as_str()?;
    let text = format!(
        "{title}\n\n{body}\n\nWhen: {when}\n\nYou get this because of your Fleet account's notification settings. \
         Security notices cannot be switched off.\n"
    );
    let html = format!(
        "<!doctype html><html><body><h1>{}</h1><p>{}</p><p>When: {}</p><p><small>You get this because of your \
         Fleet account's notification settings. Security notices cannot be switched off.</small></p></body></html>",
        escape(title),
        escape(body),
        escape(when)
    );
    Some((format!("[Fleet] {title}"), text, html))
}

/// Text made safe inside HTML.
fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_render_as_text_and_escaped_html() {
        let payload = serde_json::json!({
            "type": "notification.new_device_login",
            "timestamp": "2026-12-02T10:00:00Z",
            "data": {"title": "New sign-in", "body": "From <script>x</script> & co"},
        })
        .to_string();
        let (subject, text, html) = render(&payload).unwrap();
        assert_eq!(subject, "[Fleet] New sign-in");
        assert!(text.contains("From <script>x</script> & co"));
        assert!(html.contains("From &lt;script&gt;x&lt;/script&gt; &amp; co"));
        assert!(!html.contains("<script>"));
    }

    // The SMTP pool runs on the Tokio runtime.
    #[tokio::test]
    async fn smtp_needs_a_url_and_a_mailbox() {
        let mut settings = EmailSettings {
            sender: SenderKind::Smtp,
            ..EmailSettings::default()
        };
        assert!(Mailer::new(&settings).is_err());
        settings.smtp_url = Some(fleet_kit::Secret::new("smtp://127.0.0.1:2525"));
        assert!(Mailer::new(&settings).is_ok());
        settings.from = "not a mailbox".into();
        assert!(Mailer::new(&settings).is_err());
    }
}
