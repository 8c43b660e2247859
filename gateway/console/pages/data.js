// Activity and statistics (stats), export and import (transfer).

import * as api from "/console/api.js";
import { announce, button, field, figures, form, h, page, section, table, when } from "/console/ui.js";

// The event types of the activity log (fleet_kit::events::event_type).
const KIND_NAMES = {
  "user.created": "Account created",
  "user.updated": "Profile changed",
  "user.deleted": "Account deleted",
  "auth.login_succeeded": "Logged in",
  "auth.login_failed": "Failed login",
  "session.created": "Session started",
  "session.revoked": "Session ended",
  "password.changed": "Password changed",
  "mfa.enabled": "Two-factor turned on",
  "mfa.disabled": "Two-factor turned off",
  "mfa.backup_code_used": "Backup code used",
  "mfa.replay_rejected": "Reused code refused",
  "transfer.export_completed": "Data exported",
  "transfer.import_completed": "Data imported",
};

const kindName = (kind) => KIND_NAMES[kind] || kind;

function activityRows(items) {
  return items.map((entry) => h("tr", {},
    h("td", {}, kindName(entry.kind)),
    h("td", {}, when(entry.occurred_at)),
    h("td", {}, entry.ip || ""),
    h("td", {}, entry.user_agent || "")));
}

export async function activityPage() {
  const [stats, sessions, activity] = await Promise.all([
    api.call("GET", "/api/v1/stats/user"),
    api.call("GET", "/api/v1/stats/sessions"),
    api.call("GET", api.withQuery("/api/v1/stats/activity", { limit: 20 })),
  ]);
  const body = h("tbody", {}, activityRows(activity.items));
  let cursor = activity.next_cursor;
  const more = button("Show older", async () => {
    const next = await api.call("GET", api.withQuery("/api/v1/stats/activity", { limit: 20, cursor }));
    body.append(...activityRows(next.items));
    cursor = next.next_cursor;
    more.hidden = !cursor;
  }, { class: "quiet" });
  more.hidden = !cursor;
  const busiest = Math.max(1, ...activity.daily.map((d) => d.count));
  page("Activity",
    figures([
      ["Logins", stats.logins_total],
      ["Failed logins", stats.failed_logins_total],
      ["Last login", when(stats.last_login_at)],
      ["Active sessions", sessions.active],
      ["Sessions in all", sessions.total],
      ["Account age (days)", stats.account_age_days],
    ]),
    section("Last 30 days",
      activity.daily.length === 0 ? h("p", {}, "Nothing happened in the last 30 days.") :
        table("Events per day", ["Day", "Events"], activity.daily.map((d) => h("tr", {},
          h("td", {}, d.date),
          h("td", {}, h("meter", { min: 0, max: busiest, value: d.count, "aria-label": `${d.count} events on ${d.date}` }), ` ${d.count}`))))),
    section("What happened",
      h("table", {},
        h("caption", { class: "hint" }, "Your account's activity, newest first"),
        h("thead", {}, h("tr", {}, ["What", "When", "IP address", "Device"].map((t) => h("th", { scope: "col" }, t)))),
        body),
      h("div", { class: "pager" }, more)));
}

async function download(format) {
  const response = await api.call("GET", api.withQuery("/api/v1/export", { format }), undefined, { raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get("content-disposition") || "";
  const named = /filename="?([^";]+)"?/.exec(disposition);
  const link = h("a", { href: URL.createObjectURL(blob), download: named ? named[1] : `fleet-export.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  announce("Your export is downloading.");
}

function importResult(result, dryRun) {
  const verb = dryRun ? "would be" : "were";
  return h("div", { role: "status" },
    h("p", {}, dryRun ? "Preview: nothing has been changed yet." : "Imported."),
    figures([
      [`Profile ${dryRun ? "would change" : "changed"}`, result.profile_updated ? "yes" : "no"],
      [`Entries that ${verb} added`, result.activity_imported],
      ["Entries already here", result.activity_skipped],
    ]));
}

export function dataPage() {
  const outcome = h("div", {});
  let file = null;
  const confirm = button("Import now", async () => {
    const result = await sendImport(file, false);
    outcome.replaceChildren(importResult(result, false));
    announce("Import finished.");
  });
  confirm.hidden = true;
  const sendImport = (chosen, dryRun) => api.call("POST", api.withQuery("/api/v1/import", { dry_run: dryRun }), chosen, {
    headers: { "content-type": chosen.name.endsWith(".csv") || chosen.type === "text/csv" ? "text/csv" : "application/json" },
  });
  page("Your data",
    section("Export",
      h("p", {}, "Everything Fleet holds about you, as one file: your profile, sessions, two-factor state and activity."),
      h("p", { class: "pager" },
        button("Download JSON", () => download("json")),
        button("Download CSV", () => download("csv"), { class: "quiet" }))),
    section("Import",
      h("p", {}, "Reads an export back into this account: your display name and activity. Email, password, role and 2FA are never taken from a file. You see what would change before anything does."),
      form([field("document", "Export file", { type: "file", accept: ".json,.csv,application/json,text/csv" })],
        "Preview import", async (values) => {
          file = values.document;
          if (!file) throw Object.assign(new Error("Choose a file first."), { status: 400, errors: [] });
          const result = await sendImport(file, true);
          outcome.replaceChildren(importResult(result, true));
          confirm.hidden = false;
        }),
      outcome,
      h("p", {}, confirm)));
}
