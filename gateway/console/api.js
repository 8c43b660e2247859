// The public REST API, as the console uses it. The access token lives in
// this module's memory only; the refresh token never reaches script: the
// gateway keeps it in an HttpOnly, Secure, SameSite=Strict cookie for
// requests that say `Fleet-Session: cookie` (login, its second step,
// refresh and logout).

let access = null;

/** An answer that was not a success: its status, problem and field errors. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `request failed (${status})`);
    this.status = status;
    this.code = problem.code || "";
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.retryAfter = retryAfter;
    this.requestId = problem.request_id || "";
  }
}

const SESSION = { "fleet-session": "cookie" };

async function send(method, path, { body, token, headers = {}, raw = false } = {}) {
  const init = { method, headers: { accept: "application/json", ...headers }, credentials: "same-origin" };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    if (typeof body === "string" || body instanceof Blob) {
      init.body = body;
    } else {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: "The server cannot be reached. Check your connection and try again." });
  }
  if (!response.ok) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      problem = { detail: `${response.status} ${response.statusText}` };
    }
    const retry = Number.parseInt(response.headers.get("retry-after") || "", 10);
    throw new ApiError(response.status, problem, Number.isFinite(retry) ? retry : null);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

function keep(answer) {
  if (answer && answer.access_token) access = answer.access_token;
  return answer;
}

/** Whether the console holds an access token. */
export function signedIn() {
  return access !== null;
}

let resuming = null;

/**
 * A new access token from the session cookie; false when there is none.
 * Calls at the same time share one refresh: a refresh token is spent once,
 * and a second use would end the session.
 */
export function resume() {
  resuming ??= refresh().finally(() => { resuming = null; });
  return resuming;
}

async function refresh() {
  try {
    keep(await send("POST", "/api/v1/auth/refresh", { body: {}, headers: SESSION }));
    return true;
  } catch (err) {
    if (err.status === 401 || err.status === 400) {
      access = null;
      return false;
    }
    throw err;
  }
}

/** The first step of a login: the user, or what the second step needs. */
export async function login(email, password) {
  return keep(await send("POST", "/api/v1/auth/login", { body: { email, password }, headers: SESSION }));
}

/** The second step: a TOTP code or a backup code. */
export async function loginMfa(mfaToken, factor) {
  return keep(await send("POST", "/api/v1/auth/login/mfa", { body: { mfa_token: mfaToken, ...factor }, headers: SESSION }));
}

export async function register(body) {
  return send("POST", "/api/v1/auth/register", { body });
}

/** Ends the session here and forgets the tokens, even when the server could not be told. */
export async function logout() {
  try {
    await call("POST", "/api/v1/auth/logout", undefined, { headers: SESSION });
  } finally {
    access = null;
  }
}

/**
 * An authenticated call. An expired access token is renewed once from the
 * session cookie and the call made again.
 */
export async function call(method, path, body, options = {}) {
  const token = access;
  try {
    return await send(method, path, { ...options, body, token });
  } catch (err) {
    if (err.status !== 401 || token === null) throw err;
    // Another call may have renewed the token meanwhile.
    if (access === token && !(await resume())) throw err;
    if (access === null) throw err;
    return send(method, path, { ...options, body, token: access });
  }
}

/** A path with its query string from the non-empty values of `query`. */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}
