// The profile (name, email, password) and the sessions.

import * as api from "/console/api.js";
import { announce, button, field, form, h, page, section, table, when } from "/console/ui.js";

export async function profilePage(app) {
  const me = await api.call("GET", "/api/v1/users/me");
  app.me = me;
  const profile = form([
    field("display_name", "Display name", { value: me.display_name, autocomplete: "nickname", required: true, maxlength: 64 }),
    field("email", "Email", { type: "email", value: me.email ?? "", autocomplete: "email", required: true }),
  ], "Save profile", async (values, node) => {
    const change = { version: app.me.version };
    if (values.display_name !== app.me.display_name) change.display_name = values.display_name;
    if (values.email !== app.me.email) change.email = values.email;
    if (Object.keys(change).length === 1) {
      announce("Nothing to save.");
      return;
    }
    try {
      app.me = await api.call("PATCH", "/api/v1/users/me", change);
    } catch (err) {
      if (err.status === 409) err.message = "Your profile changed elsewhere; reload the page to see it.";
      throw err;
    }
    node.querySelector("[name=display_name]").value = app.me.display_name;
    announce("Profile saved.");
  });
  const password = form([
    field("current_password", "Current password", { type: "password", autocomplete: "current-password", required: true }),
    field("new_password", "New password", {
      type: "password", autocomplete: "new-password", required: true, hint: "At least 12 characters.",
    }),
  ], "Change password", async (values, node) => {
    await api.call("POST", "/api/v1/auth/password", values);
    node.reset();
    announce("Password changed.");
  });
  page("Profile",
    h("p", { class: "hint" }, `Role: ${me.role ?? "user"} · member since ${when(me.created_at)}`),
    section("Your details", profile),
    section("Password", password));
}

function device(agent) {
  if (!agent) return "Unknown device";
  const browser = /(Edg|Firefox|Chrome|Safari|curl|python-requests)\/[\d.]+/.exec(agent);
  const system = /(Windows|Mac OS X|Android|iPhone|Linux)/.exec(agent);
  if (!browser) return agent.slice(0, 60);
  return system ? `${browser[1]} on ${system[1]}` : browser[1];
}

export async function sessionsPage(app) {
  const { items } = await api.call("GET", "/api/v1/auth/sessions");
  const others = items.filter((s) => !s.current);
  const revoke = async (ids) => {
    for (const id of ids) await api.call("DELETE", `/api/v1/auth/sessions/${encodeURIComponent(id)}`);
    announce(ids.length === 1 ? "Session ended." : `${ids.length} sessions ended.`);
    await sessionsPage(app);
  };
  const rows = items.map((s) => h("tr", { "data-session": s.id },
    h("td", {}, device(s.user_agent), s.current ? h("span", { class: "tag" }, " this device") : null,
      h("div", { class: "hint" }, s.user_agent || "")),
    h("td", {}, s.ip || "unknown"),
    h("td", {}, when(s.last_used_at)),
    h("td", {}, when(s.created_at)),
    h("td", {}, s.current ? "" : button("Revoke", () => revoke([s.id]), {
      class: "quiet", "aria-label": `Revoke the session of ${device(s.user_agent)} from ${s.ip || "an unknown address"}`,
    }))));
  page("Sessions",
    h("p", {}, "Where your account is signed in. Ending a session signs that device out at once."),
    table("Your active sessions", ["Device", "IP address", "Last used", "Signed in", "Action"], rows),
    others.length ? h("p", {}, button("Sign out all other sessions", () => revoke(others.map((s) => s.id)), { class: "danger" })) : null);
}
