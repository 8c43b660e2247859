// The console's shell: which page a location shows, the navigation, the
// signed-in user and the unread badge.

import * as api from "/console/api.js";
import { announce, describe, h, page } from "/console/ui.js";
import { loginPage, mfaPage, signupPage } from "/console/pages/auth.js";
import { profilePage, sessionsPage } from "/console/pages/account.js";
import { securityPage } from "/console/pages/security.js";
import { activityPage, dataPage } from "/console/pages/data.js";
import { notificationsPage } from "/console/pages/notifications.js";
import { adminPage } from "/console/pages/admin.js";

/** What the pages share: the signed-in user, navigation, the badge. */
export const app = {
  me: null,
  go(route) {
    if (location.hash === route) show();
    else location.hash = route;
  },
  async signedIn() {
    app.me = await api.call("GET", "/api/v1/users/me");
    document.getElementById("nav").hidden = false;
    document.getElementById("nav-admin").hidden = app.me.role !== "admin";
    await app.refreshBadge();
  },
  async refreshBadge() {
    const badge = document.getElementById("unread");
    try {
      const feed = await api.call("GET", api.withQuery("/api/v1/notifications", { unread: true, limit: 1 }));
      const count = feed.unread_count;
      badge.hidden = count === 0;
      badge.replaceChildren(String(count), h("span", { class: "sr-only" }, " unread"));
    } catch {
      badge.hidden = true;
    }
  },
  signedOut() {
    app.me = null;
    document.getElementById("nav").hidden = true;
  },
};

const open = { "#/login": loginPage, "#/signup": signupPage, "#/mfa": mfaPage };
const guarded = {
  "#/profile": profilePage,
  "#/security": securityPage,
  "#/sessions": sessionsPage,
  "#/activity": activityPage,
  "#/data": dataPage,
  "#/notifications": notificationsPage,
  "#/admin": adminPage,
};

// One page is drawn at a time, in the order asked: a page that loads slowly
// never covers the one asked for after it.
let drawing = Promise.resolve();

function show() {
  drawing = drawing.then(draw, draw);
  return drawing;
}

async function draw() {
  const route = location.hash || "#/";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    if (open[route]) {
      await open[route](app);
    } else if (!api.signedIn()) {
      app.go("#/login");
    } else if (guarded[route]) {
      await guarded[route](app);
    } else {
      app.go("#/profile");
    }
  } catch (err) {
    if (err.status === 401) {
      app.signedOut();
      app.go("#/login");
      return;
    }
    page("Something went wrong", h("p", { class: "alert", role: "alert" }, describe(err)),
      h("p", {}, h("a", { href: "#/profile" }, "Back to your profile")));
    if (typeof err.status !== "number") throw err;
  }
}

async function start() {
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch (err) {
      announce(describe(err));
    }
    app.signedOut();
    app.go("#/login");
    announce("You are logged out.");
  });
  window.addEventListener("hashchange", show);
  try {
    if (await api.resume()) await app.signedIn();
  } catch (err) {
    announce(describe(err));
  }
  await show();
}

start();
