// What both console pages share: calling the gateway and saying what went wrong in words.

export class GatewayError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// A failed response as a GatewayError, from the contract's envelope when there is one.
export async function failure(response) {
  let code = "HTTP_" + response.status;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new GatewayError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}

// fetch that throws a GatewayError for a network failure or a non-2xx answer.
export async function call(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new GatewayError(0, "NETWORK", "The gateway could not be reached. Is it running?", null);
  }
  if (!response.ok) {
    throw await failure(response);
  }
  return response;
}

// A sentence for a person, naming what happened and what to do.
export function explain(error) {
  if (!(error instanceof GatewayError)) {
    return "Something went wrong in the page: " + (error && error.message ? error.message : String(error));
  }
  switch (error.code) {
    case "RATE_LIMITED":
      return "Too many requests: the gateway's rate limit was reached." +
        (error.retryAfter != null ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.");
    case "PROVIDER_ERROR":
      return "No answer: " + error.message + ". Try again shortly.";
    case "UNAUTHORIZED":
      return "Not authorized: " + error.message + ".";
    case "NETWORK":
      return error.message;
    default:
      return error.message + (error.status ? ` (HTTP ${error.status}, ${error.code})` : "");
  }
}

// Only http(s) links from a backend become links: never javascript: or data: URLs.
export function safeUrl(url) {
  try {
    const parsed = new URL(url, window.location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function newId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}
