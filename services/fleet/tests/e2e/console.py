"""The account console in a real browser: Playwright drives Debian's
Chromium (headless) through a newcomer's first session, checks every page
with axe-core, and fails on any Content-Security-Policy violation.

    console.py BASE_URL CHROMIUM AXE_JS SCREENSHOT_DIR ADMIN_EMAIL PASSWORD LIMITED_URL

BASE_URL is a running fleet's gateway; ADMIN_EMAIL an administrator with
PASSWORD; LIMITED_URL a gateway that allows two logins an hour. Prints one line per step; exits non-zero on the first failure.
"""

import io
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pyotp
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

BASE, CHROMIUM, AXE, SHOTS, ADMIN, PASSWORD, LIMITED = sys.argv[1:8]
SHOTS = Path(SHOTS)
EMAIL = "grace@example.com"
# Every wait is bounded: the whole run must end within the caller's deadline.
WAIT_MS = 15_000

# Records what the browser itself reports about the policy: the
# `securitypolicyviolation` events of every document, before any page
# script runs (an init script is not subject to the page's policy).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""

console_violations: list[str] = []
script_errors: list[str] = []


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


def check_page(page: Page, name: str) -> None:
    """axe-core on the page as it is: no serious or critical violation, and
    no policy violation so far; then a screenshot."""
    page.wait_for_load_state("networkidle")
    result = page.evaluate(
        """async () => await axe.run(document, {resultTypes: ["violations"]})"""
    )
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"{name}: accessibility violations: {bad}"
    violations = page.evaluate("window.__violations")
    assert not violations, f"{name}: CSP violations: {violations}"
    assert not console_violations, f"{name}: CSP violations in the console: {console_violations}"
    assert not script_errors, f"{name}: uncaught script errors: {script_errors}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    step(f"{name}: axe clean ({len(result['violations'])} minor), no CSP violation")


def api(method: str, path: str, body=None, token=None):
    """The public API outside the browser (another device)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, data=data, context=context, timeout=15) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def read_qr(page: Page) -> str:
    """The otpauth URL in the QR code as the page shows it."""
    shot = page.get_by_role("img", name=re.compile("QR code")).screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
    assert len(found) == 1, f"expected one QR code on the page, found {len(found)}"
    return found[0].text


def main() -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(RECORD_VIOLATIONS)
        context.add_init_script(path=AXE)
        page = context.new_page()
        page.on(
            "console",
            lambda m: console_violations.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text
            else None,
        )
        page.on("pageerror", lambda e: script_errors.append(str(e)))

        step("the console opens on the login page")
        page.goto(BASE + "/")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        check_page(page, "login")

        step("sign up: a field error is shown beside its field, then the account is made")
        page.get_by_role("link", name="Create an account").click()
        page.get_by_label("Display name").fill("Grace")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        password = page.get_by_label("Password")
        expect(password).to_have_attribute("aria-invalid", "true")
        expect(page.locator(f"#{password.get_attribute('id')}-error")).to_contain_text("12")
        check_page(page, "signup")
        password.fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        expect(page.get_by_role("heading", name="Profile")).to_be_visible()
        # The refresh token is in an HttpOnly cookie, never in script.
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["__Host-fleet_session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict", session
        assert "fleet_session" not in page.evaluate("document.cookie")

        step("enrol TOTP by reading the QR code off the page")
        page.get_by_role("link", name="Two-factor").click()
        page.get_by_role("button", name="Set up two-factor").click()
        url = read_qr(page)
        assert url.startswith("otpauth://totp/"), url
        secret = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["secret"][0]
        expect(page.locator("#totp-secret")).to_have_text(secret)
        check_page(page, "two-factor-setup")
        totp = pyotp.parse_uri(url)
        page.get_by_label("Code from the app").fill(totp.now())
        page.get_by_role("button", name="Turn on two-factor").click()
        codes = page.get_by_role("list", name="Backup codes").get_by_role("listitem")
        expect(codes).to_have_count(10)
        backup = codes.all_inner_texts()
        check_page(page, "backup-codes")
        page.get_by_role("button", name="I have saved them").click()
        expect(page.locator("#main").get_by_text("Two-factor authentication is on.")).to_be_visible()
        check_page(page, "two-factor")

        step("log out, then log in with a TOTP code")
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        assert "__Host-fleet_session" not in {c["name"] for c in context.cookies()}
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Second step")).to_be_visible()
        code = page.get_by_label("Code from your authenticator app")
        wrong = next(c for c in ("000000", "111111", "222222") if not totp.verify(c, valid_window=2))
        code.fill(wrong)
        page.get_by_role("button", name="Verify").click()
        # A wrong factor at login is a 401 naming no field: the form says so.
        expect(page.locator("form .alert")).not_to_be_empty()
        expect(page.locator("form .alert")).to_be_visible()
        check_page(page, "second-step")
        # The next step's code: the one confirmed above may be this step's,
        # and a code is never taken twice.
        page.get_by_label("Code from your authenticator app").fill(totp.at(time.time() + totp.interval))
        page.get_by_role("button", name="Verify").click()
        expect(page.get_by_role("heading", name="Profile")).to_be_visible()

        step("a reload keeps the session (the cookie), and the token stays out of storage")
        page.reload()
        expect(page.get_by_role("heading", name="Profile")).to_be_visible()
        stored = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
        assert "eyJ" not in stored, stored

        step("another device signs in; the session list shows both; revoke the other")
        first = api("POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})
        other = api("POST", "/api/v1/auth/login/mfa", {"mfa_token": first["mfa_token"], "backup_code": backup[0]})
        page.get_by_role("link", name="Sessions").click()
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("tbody tr", has_text="this device")).to_have_count(1)
        check_page(page, "sessions")
        page.get_by_role("button", name=re.compile("^Revoke the session of Firefox")).click()
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("this device")
        try:
            api("GET", "/api/v1/users/me", token=other["access_token"])
            raise AssertionError("the revoked session's token still works")
        except urllib.error.HTTPError as err:
            assert err.code == 401, err.code

        step("change the display name and the password")
        page.get_by_role("link", name="Profile").click()
        page.get_by_label("Display name").fill("Grace Hopper")
        page.get_by_role("button", name="Save profile").click()
        expect(page.locator("#status")).to_contain_text("Profile saved")
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password").fill(PASSWORD + " again")
        page.get_by_role("button", name="Change password").click()
        expect(page.locator("#status")).to_contain_text("Password changed")
        check_page(page, "profile")

        step("export JSON and check the download; preview an import of it")
        page.get_by_role("link", name="Your data").click()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download JSON").click()
        exported = json.loads(Path(download.value.path()).read_text())
        assert exported["data"]["profile"]["display_name"] == "Grace Hopper", exported["data"]["profile"]
        assert exported["data"]["profile"]["email"] == EMAIL
        page.get_by_label("Export file").set_input_files(download.value.path())
        page.get_by_role("button", name="Preview import").click()
        expect(page.locator("#main").get_by_text("Preview: nothing has been changed yet.")).to_be_visible()
        check_page(page, "data")

        step("activity and statistics")
        page.get_by_role("link", name="Activity").click()
        expect(page.locator("#main").get_by_text("Logged in").first).to_be_visible()
        check_page(page, "activity")

        step("the password change arrives as a notification, with the unread badge")
        deadline = time.monotonic() + 30
        page.get_by_role("link", name=re.compile("^Notifications")).click()
        while not page.locator('li[data-kind="password_changed"]').count():
            assert time.monotonic() < deadline, "no password_changed notification within 30 s"
            time.sleep(0.5)
            page.get_by_role("link", name=re.compile("^Notifications")).click()
            page.wait_for_load_state("networkidle")
        expect(page.locator("#unread")).to_be_visible()
        check_page(page, "notifications")
        page.get_by_role("button", name="Mark all read").click()
        expect(page.locator("#main").get_by_text("Nothing unread.")).to_be_visible()
        expect(page.locator("#unread")).to_be_hidden()

        step("an administrator finds the user and disables the account")
        admin = browser.new_context(ignore_https_errors=True)
        admin.set_default_timeout(WAIT_MS)
        admin.add_init_script(RECORD_VIOLATIONS)
        admin.add_init_script(path=AXE)
        desk = admin.new_page()
        desk.goto(BASE + "/")
        desk.get_by_label("Email").fill(ADMIN)
        desk.get_by_label("Password").fill(PASSWORD)
        desk.get_by_role("button", name="Log in").click()
        expect(desk.get_by_role("heading", name="Profile")).to_be_visible()
        desk.get_by_role("link", name="Users").click()
        expect(desk.get_by_role("heading", name="Users", exact=True)).to_be_visible()
        desk.get_by_label("Name or email contains").fill("hopper")
        desk.get_by_role("button", name="Search").click()
        row = desk.locator("tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Grace Hopper")
        check_page(desk, "admin-users")
        row.get_by_label("Status", exact=True).select_option("disabled")
        row.get_by_role("button", name="Save").click()
        expect(desk.locator("#status")).to_contain_text("Grace Hopper: user, disabled")
        admin.close()

        step("a 429 says when to try again")
        limited = browser.new_context(ignore_https_errors=True)
        limited.set_default_timeout(WAIT_MS)
        elsewhere = limited.new_page()
        elsewhere.goto(LIMITED + "/")
        for attempt in range(3):
            elsewhere.get_by_label("Email").fill("nobody@example.com")
            elsewhere.get_by_label("Password").fill(f"wrong password {attempt}")
            elsewhere.get_by_role("button", name="Log in").click()
            expect(elsewhere.get_by_role("button", name="Log in")).to_be_enabled()
        expect(elsewhere.locator("form .alert")).to_contain_text(re.compile(r"Too many requests\. Try again in \d+ seconds?\."))
        limited.close()

        browser.close()
    print("console: every step passed")


if __name__ == "__main__":
    main()
