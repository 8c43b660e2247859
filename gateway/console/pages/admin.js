// For admins: the users, searched and paged, with role and status changes,
// and the fleet's figures.

import * as api from "/console/api.js";
import { announce, button, field, figures, form, h, page, section, table, when } from "/console/ui.js";

function row(user) {
  let current = user;
  const role = field("role", "Role", { type: "select", choices: ["user", "admin"], value: user.role });
  const status = field("status", "Status", { type: "select", choices: ["active", "disabled"], value: user.status });
  for (const node of [role, status]) node.querySelector("label").classList.add("hint");
  const save = form([role, status], "Save", async (values) => {
    const change = { version: current.version };
    if (values.role !== current.role) change.role = values.role;
    if (values.status !== current.status) change.status = values.status;
    if (Object.keys(change).length === 1) return;
    try {
      current = await api.call("PATCH", `/api/v1/users/${encodeURIComponent(user.id)}`, change);
    } catch (err) {
      if (err.status === 409) err.message = "This user changed meanwhile; search again to see it.";
      throw err;
    }
    announce(`${current.display_name}: ${current.role}, ${current.status}.`);
  }, { class: "inline", "aria-label": `Role and status of ${user.display_name}` });
  return h("tr", { "data-user": user.id },
    h("td", {}, user.display_name, h("div", { class: "hint" }, user.email ?? "")),
    h("td", {}, when(user.created_at)),
    h("td", {}, save));
}

export async function adminPage(app, query = { q: "", pages: [""] }) {
  if (app.me?.role !== "admin") {
    page("Users", h("p", {}, "Only administrators see this page."));
    return;
  }
  const cursor = query.pages[query.pages.length - 1];
  const [list, overview] = await Promise.all([
    api.call("GET", api.withQuery("/api/v1/users", { q: query.q, cursor, limit: 20 })),
    api.call("GET", "/api/v1/stats/overview"),
  ]);
  const search = form([field("q", "Name or email contains", { type: "search", value: query.q, maxlength: 100 })],
    "Search", async ({ q }) => adminPage(app, { q: q.trim(), pages: [""] }), { class: "inline", role: "search" });
  const previous = query.pages.length > 1
    ? button("Previous page", () => adminPage(app, { q: query.q, pages: query.pages.slice(0, -1) }), { class: "quiet" }) : null;
  const next = list.next_cursor
    ? button("Next page", () => adminPage(app, { q: query.q, pages: [...query.pages, list.next_cursor] }), { class: "quiet" }) : null;
  page("Users",
    figures([
      ["Users", overview.users_total],
      ["Active today", overview.active_users_1d],
      ["Active this week", overview.active_users_7d],
      ["Active this month", overview.active_users_30d],
    ]),
    section("Find users", search),
    list.items.length
      ? table(`Page ${query.pages.length}${query.q ? ` of users matching "${query.q}"` : ""}`,
        ["User", "Joined", "Role and status"], list.items.map(row))
      : h("p", {}, "No user matches."),
    h("div", { class: "pager" }, previous, next));
}
