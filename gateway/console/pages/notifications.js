// Notifications (notify): the feed with its unread badge, marking read,
// preferences, and the webhook with its signing secret shown once.

import * as api from "/console/api.js";
import { announce, button, field, form, h, page, section, when } from "/console/ui.js";

// The kinds of notification (services/notify/src/kinds.rs); security
// notices cannot be switched off.
const KINDS = [
  ["new_device_login", "A login from a new device or network", true],
  ["password_changed", "Your password changed", true],
  ["mfa_enabled", "Two-factor turned on", true],
  ["mfa_disabled", "Two-factor turned off", true],
  ["backup_code_used", "A backup code was used", true],
  ["backup_codes_low", "Backup codes running low", true],
  ["totp_replay_rejected", "A used code was tried again", true],
  ["account_locked", "Your account was locked", true],
  ["session_revoked", "A session was ended by someone else", true],
  ["refresh_token_reuse", "A stolen session was stopped", true],
  ["webhook_disabled", "Webhook deliveries stopped", true],
  ["export_completed", "An export finished", false],
  ["import_completed", "An import finished", false],
];

function secretShown(secret) {
  return h("div", { role: "status" },
    h("p", {}, "Your webhook signing secret, shown this once. Keep it where your endpoint verifies signatures:"),
    h("p", {}, h("code", { class: "secret", id: "webhook-secret" }, secret)));
}

function item(note, app) {
  const unread = !note.read_at;
  const mark = unread ? button("Mark read", async () => {
    await api.call("POST", `/api/v1/notifications/${encodeURIComponent(note.id)}/read`);
    await notificationsPage(app);
  }, { class: "quiet", "aria-label": `Mark read: ${note.title}` }) : null;
  return h("li", { class: unread ? "unread" : "", "data-kind": note.kind },
    h("h3", {}, unread ? h("span", { class: "tag" }, "New") : null, " ", note.title),
    h("p", {}, note.body),
    h("p", { class: "hint" }, when(note.created_at)),
    mark);
}

export async function notificationsPage(app) {
  const [feed, prefs] = await Promise.all([
    api.call("GET", api.withQuery("/api/v1/notifications", { limit: 50 })),
    api.call("GET", "/api/v1/notifications/preferences"),
  ]);
  await app.refreshBadge();
  const secret = h("div", {});
  const chosen = new Set(prefs.events);
  const preferences = form([
    field("email", "Also send notifications by email", { type: "checkbox", checked: prefs.email }),
    field("webhook_url", "Webhook URL", {
      type: "url", value: prefs.webhook_url, hint: "Fleet signs each delivery (Standard Webhooks). Leave empty for none.",
    }),
    h("fieldset", {},
      h("legend", {}, "Tell me about"),
      h("p", { class: "hint" }, "Security notices (the greyed ones) are always sent."),
      KINDS.map(([kind, label, security]) => field(`kind:${kind}`, label, {
        type: "checkbox", checked: security || chosen.has(kind), disabled: security,
      }))),
  ], "Save preferences", async (values) => {
    const events = KINDS.filter(([kind]) => values[`kind:${kind}`]).map(([kind]) => kind);
    const saved = await api.call("PUT", "/api/v1/notifications/preferences", {
      email: values.email, webhook_url: values.webhook_url.trim(), events,
    });
    secret.replaceChildren(saved.webhook_secret ? secretShown(saved.webhook_secret) : "");
    announce("Preferences saved.");
  });
  const rotate = prefs.webhook_url ? button("New signing secret", async () => {
    const { webhook_secret: value } = await api.call("POST", "/api/v1/notifications/webhook/rotate-secret");
    secret.replaceChildren(secretShown(value));
  }, { class: "quiet" }) : null;
  const disabled = prefs.webhook_disabled_at ? h("p", { class: "alert", role: "alert" },
    `Deliveries to your webhook stopped on ${when(prefs.webhook_disabled_at)}. Save a URL to start them again.`) : null;
  page("Notifications",
    h("p", {}, feed.unread_count === 0 ? "Nothing unread." : `${feed.unread_count} unread.`),
    feed.unread_count ? button("Mark all read", async () => {
      await api.call("POST", "/api/v1/notifications/read-all");
      await notificationsPage(app);
    }) : null,
    feed.items.length ? h("ul", { class: "feed", "aria-label": "Notifications" }, feed.items.map((n) => item(n, app)))
      : h("p", {}, "No notifications yet."),
    section("Preferences", disabled, preferences, rotate, secret));
}
