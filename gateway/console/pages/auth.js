// Signing up, logging in and the second factor.

import * as api from "/console/api.js";
import { announce, field, form, h, page } from "/console/ui.js";

// The first step's answer, kept for the second step only.
let pending = null;

async function enter(app, answer) {
  if (answer.mfa_required) {
    pending = { token: answer.mfa_token, methods: answer.methods };
    app.go("#/mfa");
    return;
  }
  pending = null;
  await app.signedIn();
  app.go("#/profile");
  announce(`Welcome, ${app.me.display_name}.`);
}

export function loginPage(app) {
  app.signedOut();
  page("Log in",
    form([
      field("email", "Email", { type: "email", autocomplete: "username", required: true }),
      field("password", "Password", { type: "password", autocomplete: "current-password", required: true }),
    ], "Log in", async ({ email, password }) => enter(app, await api.login(email, password))),
    h("p", {}, "New here? ", h("a", { href: "#/signup" }, "Create an account")));
}

export function signupPage(app) {
  app.signedOut();
  page("Create an account",
    form([
      field("display_name", "Display name", { autocomplete: "nickname", required: true, maxlength: 64 }),
      field("email", "Email", { type: "email", autocomplete: "email", required: true }),
      field("password", "Password", {
        type: "password", autocomplete: "new-password", required: true, hint: "At least 12 characters.",
      }),
    ], "Create account", async (values) => {
      await api.register(values);
      await enter(app, await api.login(values.email, values.password));
    }),
    h("p", {}, "Have an account? ", h("a", { href: "#/login" }, "Log in")));
}

export function mfaPage(app) {
  if (!pending) {
    app.go("#/login");
    return;
  }
  const methods = pending.methods || [];
  const code = field("code", "Code from your authenticator app", {
    inputmode: "numeric", autocomplete: "one-time-code", hint: "Six digits.",
  });
  const backup = field("backup_code", "Backup code", { hint: "One of the codes you saved when you turned on two-factor." });
  backup.hidden = true;
  const useBackup = h("button", { type: "button", class: "quiet" }, "Use a backup code instead");
  useBackup.addEventListener("click", () => {
    const showBackup = backup.hidden;
    backup.hidden = !showBackup;
    code.hidden = showBackup;
    useBackup.textContent = showBackup ? "Use the authenticator app instead" : "Use a backup code instead";
    (showBackup ? backup : code).querySelector("input").focus();
  });
  page("Second step",
    h("p", {}, "Your account has two-factor authentication on."),
    form([code, backup], "Verify", async (values) => {
      const factor = backup.hidden ? { code: values.code.trim() } : { backup_code: values.backup_code.trim() };
      await enter(app, await api.loginMfa(pending.token, factor));
    }),
    methods.includes("backup_code") ? useBackup : null,
    h("p", {}, h("a", { href: "#/login" }, "Start again")));
}
