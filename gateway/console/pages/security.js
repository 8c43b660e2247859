// Two-factor authentication: enrol TOTP with its QR code, confirm, show
// the backup codes once, regenerate them, turn it off.

import * as api from "/console/api.js";
import { announce, button, field, figures, form, h, page, section } from "/console/ui.js";

const codeField = (label) => field("code", label, { inputmode: "numeric", autocomplete: "one-time-code", hint: "Six digits." });

function backupCodes(codes, app) {
  page("Your backup codes",
    h("p", {}, "Each code signs you in once if you lose your authenticator. Save them somewhere safe now: they are not shown again."),
    h("ul", { class: "codes", "aria-label": "Backup codes" }, codes.map((c) => h("li", {}, c))),
    h("p", {}, button("I have saved them", () => securityPage(app))));
}

async function enrol(app) {
  const enrolment = await api.call("POST", "/api/v1/auth/2fa/totp/enroll");
  page("Set up two-factor",
    h("ol", {},
      h("li", {}, "Scan this QR code with an authenticator app."),
      h("li", {}, "Enter the six-digit code it shows.")),
    h("img", {
      class: "qr", src: `data:image/png;base64,${enrolment.qr_png_base64}`,
      alt: "QR code holding your authenticator secret", width: 200, height: 200,
    }),
    h("p", {}, "Cannot scan? Type this key: ", h("code", { class: "secret", id: "totp-secret" }, enrolment.secret)),
    form([codeField("Code from the app")], "Turn on two-factor", async ({ code }) => {
      const { backup_codes: codes } = await api.call("POST", "/api/v1/auth/2fa/totp/confirm", { code: code.trim() });
      announce("Two-factor authentication is on.");
      backupCodes(codes, app);
    }),
    h("p", {}, button("Cancel", () => securityPage(app), { class: "quiet" })));
}

export async function securityPage(app) {
  const status = await api.call("GET", "/api/v1/auth/2fa");
  if (!status.enabled) {
    page("Two-factor",
      h("p", {}, "Two-factor authentication is off. With it on, a login also needs a code from an app on your phone."),
      button("Set up two-factor", () => enrol(app)));
    return;
  }
  const low = status.backup_codes_running_low ? h("p", { class: "alert", role: "alert" }, "You are running out of backup codes: make new ones.") : null;
  page("Two-factor",
    h("p", { class: "success" }, "Two-factor authentication is on."),
    figures([["Methods", status.methods.join(", ")], ["Backup codes left", status.backup_codes_remaining]]),
    low,
    section("New backup codes",
      h("p", {}, "Makes ten new codes and cancels the old ones. Your other sessions are signed out."),
      form([codeField("Code from the app")], "Make new backup codes", async ({ code }) => {
        const { backup_codes: codes } = await api.call("POST", "/api/v1/auth/2fa/backup-codes", { code: code.trim() });
        backupCodes(codes, app);
      })),
    section("Turn off two-factor",
      h("p", {}, "Give a current code, or your password if you lost the app. Your other sessions are signed out."),
      form([
        codeField("Code from the app"),
        field("password", "Or your password", { type: "password", autocomplete: "current-password" }),
      ], "Turn off two-factor", async ({ code, password }) => {
        const body = code.trim() ? { code: code.trim() } : { password };
        await api.call("POST", "/api/v1/auth/2fa/totp/disable", body);
        announce("Two-factor authentication is off.");
        await securityPage(app);
      })));
}
