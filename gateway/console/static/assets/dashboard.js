// The dashboard: the admin API read with the admin key the user types in (kept in sessionStorage,
// so it lasts for this tab only). Every figure comes from the gateway (GET /api/admin/stats, the
// SVG chart from /api/admin/charts/activity); the page only lays them out.
import { GatewayError, call, element, explain, safeUrl } from "./api.js";

const KEY = "smarteravatar.adminKey";
const $ = (id) => document.getElementById(id);
const ui = {
  signin: $("signin"), keyForm: $("key-form"), key: $("admin-key"), error: $("error"), dashboard: $("dashboard"),
  period: $("period"), refresh: $("refresh"), signout: $("signout"), updated: $("updated"),
  activity: $("activity"), questions: $("questions"), sources: $("sources"),
  search: $("search"), searchText: $("search-text"), searchSession: $("search-session"),
  conversations: $("conversations"), conversationsStatus: $("conversations-status"), more: $("more"),
  transcriptPanel: $("transcript-panel"), transcript: $("transcript"), transcriptMeta: $("transcript-meta"),
};
let nextCursor = null;

function adminKey() { return window.sessionStorage.getItem(KEY); }

async function admin(path) {
  const key = adminKey();
  if (!key) throw new GatewayError(401, "UNAUTHORIZED", "no admin key", null);
  try {
    return await call(path, { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
  } catch (error) {
    if (error instanceof GatewayError && error.status === 401) {
      window.sessionStorage.removeItem(KEY);
      showSignin("The admin key was refused. Check it and try again.");
    } else if (error instanceof GatewayError && error.status === 404 && path.startsWith("/api/admin/stats")) {
      throw new GatewayError(404, "NOT_FOUND", "The admin API is off on this gateway: set GATEWAY_ADMIN_KEYS (auth.admin_keys) and restart it", null);
    }
    throw error;
  }
}

function showSignin(message) {
  ui.dashboard.hidden = true;
  ui.signin.hidden = false;
  ui.error.textContent = message || "";
  ui.key.value = "";
  ui.key.focus();
}

function since(days) {
  const now = new Date();
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) - (days - 1) * 86400000;
  return new Date(start).toISOString().slice(0, 10);
}

const number = new Intl.NumberFormat("en");
function ms(value) { return value == null ? "–" : number.format(Math.round(value)) + " ms"; }

function setTiles(stats) {
  $("t-conversations").textContent = number.format(stats.conversations);
  $("t-turns").textContent = number.format(stats.turns);
  $("t-failed").replaceChildren(
    stats.backendErrorRate == null ? "–" : (stats.backendErrorRate * 100).toFixed(1) + "%",
    element("small", { text: ` ${stats.backendErrors} of ${stats.turns}` }),
  );
  $("t-p50").textContent = ms(stats.latencyMs.p50);
  $("t-p90").textContent = `${ms(stats.latencyMs.p90)} / ${ms(stats.latencyMs.p99)}`;
  $("t-minutes").textContent = number.format(stats.conversationMinutes);
}

function rows(body, items, cells, empty) {
  body.replaceChildren(...(items.length ? items.map((item) => element("tr", {}, ...cells(item)))
    : [element("tr", {}, element("td", { colspan: 2, class: "muted", text: empty }))]));
}

async function loadChart(from) {
  ui.activity.setAttribute("aria-busy", "true");
  const response = await admin("/api/admin/charts/activity?from=" + from);
  const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml").documentElement;
  if (svg.nodeName !== "svg") throw new Error("the chart could not be read");
  ui.activity.replaceChildren(document.importNode(svg, true));
  ui.activity.removeAttribute("aria-busy");
}

async function loadStats() {
  const from = since(Number(ui.period.value));
  const stats = await (await admin("/api/admin/stats?top=10&from=" + from)).json();
  setTiles(stats);
  rows(ui.questions, stats.topQuestions, (q) => [
    element("td", { class: "text", text: q.question }), element("td", { class: "num", text: q.count }),
  ], "No questions in this period.");
  rows(ui.sources, stats.topSources, (s) => {
    const url = safeUrl(s.url);
    const title = s.title || s.url;
    return [
      element("td", { class: "text" }, url ? element("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: title }) : title),
      element("td", { class: "num", text: s.citations }),
    ];
  }, "No sources cited in this period.");
  await loadChart(from);
}

// -- conversations -------------------------------------------------------------------------

function conversationRow(c) {
  const view = element("button", { type: "button", "data-id": c.conversationId, text: "View" });
  view.setAttribute("aria-label", `View the transcript of ${c.conversationId}`);
  view.addEventListener("click", () => showTranscript(c.conversationId).catch(report));
  const duration = c.metadata && typeof c.metadata.duration === "number" ? c.metadata.duration : "–";
  return element("tr", { "data-id": c.conversationId },
    element("td", { text: c.createdAt.replace("T", " ").slice(0, 19) }),
    element("td", { class: "text", text: c.sessionId }),
    element("td", { class: "num", text: c.messageCount }),
    element("td", { class: "num", text: duration }),
    element("td", {}, view));
}

async function loadConversations(append = false) {
  const params = new URLSearchParams({ limit: "20" });
  const text = ui.searchText.value.trim();
  const session = ui.searchSession.value.trim();
  if (text) params.set("q", text);
  if (session) params.set("sessionId", session);
  if (append && nextCursor) params.set("cursor", nextCursor);
  const page = await (await admin("/api/admin/conversations?" + params)).json();
  const items = page.conversations.map(conversationRow);
  if (append) ui.conversations.append(...items);
  else ui.conversations.replaceChildren(...items);
  nextCursor = page.nextCursor;
  ui.more.hidden = !nextCursor;
  const shown = ui.conversations.children.length;
  const filtered = text || session ? " matching the search" : "";
  ui.conversationsStatus.textContent = shown ? `${shown} conversation${shown === 1 ? "" : "s"}${filtered} shown${nextCursor ? "; more below" : ""}.`
    : `No conversations${filtered}.`;
}

async function showTranscript(id) {
  const c = await (await admin("/api/admin/conversations/" + encodeURIComponent(id))).json();
  ui.transcriptMeta.textContent = `${c.conversationId} · session ${c.sessionId} · ${c.createdAt}` +
    (c.metadata && c.metadata.source ? ` · from ${c.metadata.source}` : "");
  ui.transcript.replaceChildren(...c.messages.map((m) => element("li", { class: m.role },
    element("span", { class: "who", text: m.role }), element("span", { text: m.content }))));
  ui.transcriptPanel.hidden = false;
  ui.transcriptPanel.dataset.id = c.conversationId;
  ui.transcriptPanel.focus();
}

// -- exports: fetched with the key, then handed to the browser as a download -------------

async function download(kind, format) {
  const response = await admin(`/api/admin/export?kind=${kind}&format=${format}`);
  const blob = await response.blob();
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const link = element("a", { href: URL.createObjectURL(blob), download: match ? match[1] : `${kind}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// -- wiring --------------------------------------------------------------------------------

function report(error) {
  if (error instanceof GatewayError && error.status === 401) return;  // already back at the key form
  ui.error.textContent = explain(error);
}

async function open() {
  ui.error.textContent = "";
  try {
    await loadStats();  // first: a refused key stops here
    ui.signin.hidden = true;
    ui.dashboard.hidden = false;
    await loadConversations();
    ui.updated.textContent = "Updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (error) {
    report(error);
  }
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (!key) return;
  window.sessionStorage.setItem(KEY, key);
  open();
});
ui.signout.addEventListener("click", () => {
  window.sessionStorage.removeItem(KEY);
  showSignin("");
});
ui.refresh.addEventListener("click", () => open());
ui.period.addEventListener("change", () => loadStats().catch(report));
ui.search.addEventListener("submit", (event) => {
  event.preventDefault();
  loadConversations().catch(report);
});
ui.more.addEventListener("click", () => loadConversations(true).catch(report));
for (const button of document.querySelectorAll("[data-kind][data-format]")) {
  button.addEventListener("click", () => download(button.dataset.kind, button.dataset.format).catch(report));
}

if (adminKey()) open();
else showSignin("");
