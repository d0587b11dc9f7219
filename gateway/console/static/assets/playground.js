// The playground: a visitor's conversation with the avatar, through this gateway's public routes
// plus one console route that plays the company's own server.
//
// - A conversation is an avatar session. Where the gateway has avatar sessions, the page opens one
//   when the visitor starts talking (POST /console/session: what the company's server would get
//   from /api/get-access-token with its API key) and holds its chatToken: the credential for
//   /api/transcribe, for /api/chat (which requires it only with avatar.require_session_token) and
//   for POST /api/sessions/end, called when the conversation ends. Where it has none (404), the
//   page talks without one.
// - Typed questions go to POST /api/chat. The request asks for a stream first
//   (Accept: text/event-stream) and reads whichever comes back: server-sent events where the
//   gateway streams, the contract's JSON answer where it does not.
// - Spoken questions (once /api/health reports a speech-to-text provider) are recorded in the
//   browser and sent to POST /api/transcribe; the text then goes to /api/chat like a typed one.
// - Answers are spoken by the browser (Web Speech API), the stand-in for a streaming avatar;
//   where the gateway's avatar provider is LiveAvatar, the session answer carries the vendor's
//   session token (minted server-side: no key reaches the page) and the page loads the vendored
//   LiveAvatar web SDK (../vendor/), starts the streaming avatar into a <video> and has it speak
//   each answer. Any SDK error falls back to the browser's voice, with a note saying so.
// - "End conversation" (or leaving the page) logs the transcript via POST /api/conversations/log.
import { GatewayError, call, element, explain, failure, newId, safeUrl } from "./api.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("ask"), question: $("question"), send: $("send"), mic: $("mic"), micHelp: $("mic-help"),
  transcript: $("transcript"), error: $("error"), notice: $("notice"), speak: $("speak"),
  speech: $("speech-status"), avatar: $("avatar"), end: $("end"), saved: $("saved"), health: $("health"),
  voiceMode: $("voice-mode"), video: $("avatar-video"),
};

const conversation = { sessionId: null, messages: [], startedAt: null, logged: true };
// The visitor's avatar session; `available` turns false when the gateway has no session route.
const session = { id: null, chatToken: null, expiresAt: 0, available: true, opening: null };
const SESSION_MARGIN_MS = 15000; // a session this close to its end is replaced before a call

// The session, opened when needed (or replaced when about to expire); null where the gateway
// has no avatar sessions. Throws a GatewayError when one cannot be opened (cap, rate limit).
function ensureSession() {
  if (!session.available) return Promise.resolve(null);
  if (session.chatToken && session.expiresAt - Date.now() > SESSION_MARGIN_MS) return Promise.resolve(session);
  session.opening ??= openSession().finally(() => { session.opening = null; });
  return session.opening;
}

async function openSession() {
  let response;
  try {
    response = await call("/console/session", { method: "POST", headers: { Accept: "application/json" } });
  } catch (error) {
    if (error instanceof GatewayError && error.status === 404) {
      session.available = false;
      return null;
    }
    throw error;
  }
  const opened = await response.json();
  Object.assign(session, { id: opened.sessionId, chatToken: opened.chatToken, expiresAt: Date.parse(opened.expiresAt) });
  conversation.sessionId = opened.sessionId;
  if (opened.avatar && opened.avatar.provider === "liveavatar") startStreamingAvatar(opened.avatar);
  document.body.dataset.session = "open";
  ui.end.disabled = false;
  return session;
}

function authorization() {
  return session.chatToken ? { Authorization: "Bearer " + session.chatToken } : {};
}

function sessionTrouble(error) {
  if (error instanceof GatewayError && error.code === "RATE_LIMITED" && /session limit/i.test(error.message)) {
    return "Every avatar session is in use right now." +
      (error.retryAfter != null ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.");
  }
  return explain(error);
}

// Ends the session at the gateway (its slot is freed, a vendor session is stopped); forgets it.
async function endSession() {
  stopStreamingAvatar();
  const token = session.chatToken;
  Object.assign(session, { id: null, chatToken: null, expiresAt: 0 });
  delete document.body.dataset.session;
  if (!token) return;
  try {
    await call("/api/sessions/end", { method: "POST", headers: { Authorization: "Bearer " + token } });
    document.body.dataset.sessionEnded = "true";
  } catch (error) {
    // No /api/sessions/end on this gateway (404): the session ends by itself at its expiry.
    if (!(error instanceof GatewayError && error.status === 404)) {
      showNotice("The avatar session could not be ended now (" + explain(error) + "); it ends by itself shortly.");
    }
  }
}

function showError(text) { ui.error.textContent = text; }
function showNotice(text) { ui.notice.textContent = text; }

function addMessage(role, text) {
  const empty = ui.transcript.querySelector(".empty");
  if (empty) empty.remove();
  const body = element("span", { class: "text", text });
  const item = element("li", { class: role }, element("span", { class: "who", text: role === "user" ? "You" : "Avatar" }), body);
  ui.transcript.append(item);
  item.scrollIntoView({ block: "end" });
  return { item, body };
}

function showSources(item, sources) {
  const links = sources
    .map((source) => ({ title: String(source.title || source.url || "source"), url: safeUrl(String(source.url || "")) }))
    .map(({ title, url }) => element("li", {}, url ? element("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: title }) : element("span", { text: title })));
  if (links.length) item.append(element("ul", { class: "sources", "aria-label": "Sources" }, ...links));
}

// -- speaking the answer --------------------------------------------------------------------

function setSpeech(state, text) {
  ui.speech.dataset.state = state;
  ui.speech.textContent = text;
  ui.avatar.classList.toggle("speaking", state === "speaking");
}

// -- the vendor's streaming avatar (LiveAvatar's web SDK), where the gateway has it --------------

const SDK_URL = "../vendor/liveavatar-web-sdk.js";
const KEEP_ALIVE_MS = 150000; // LiveAvatar drops a session after minutes without one
const START_WAIT_MS = 15000; // how long an answer waits for an avatar still starting
const streaming = { starting: null, live: null, keepAlive: null };

function avatarMode(state, text) {
  ui.voiceMode.dataset.avatar = state;
  ui.voiceMode.textContent = text;
}

function reasonOf(error) {
  const text = String((error && error.message) || error || "unknown error");
  return text.length > 160 ? text.slice(0, 157) + "…" : text;
}

function stopStreamingAvatar() {
  clearInterval(streaming.keepAlive);
  const live = streaming.live;
  Object.assign(streaming, { starting: null, live: null, keepAlive: null });
  if (live) live.stop().catch(() => {});
  ui.video.hidden = true;
  ui.avatar.hidden = false;
}

function streamingFailed(error) {
  stopStreamingAvatar();
  avatarMode("fallback", `The streaming avatar is not available (${reasonOf(error)}); ` +
    "the browser speaks the answers instead.");
}

// Starts the vendor's avatar with the session token /console/session handed over.
function startStreamingAvatar(vendor) {
  stopStreamingAvatar();
  avatarMode("starting", "Starting the streaming avatar…");
  const attempt = (async () => {
    const sdk = await import(SDK_URL);
    const live = new sdk.LiveAvatarSession(vendor.sessionToken, { apiUrl: vendor.apiUrl, voiceChat: false });
    live.on(sdk.SessionEvent.SESSION_STREAM_READY, () => {
      live.attach(ui.video);
      ui.video.hidden = false;
      ui.avatar.hidden = true;
    });
    live.on(sdk.SessionEvent.SESSION_DISCONNECTED, (reason) => {
      if (streaming.live === live) streamingFailed(new Error("the stream ended: " + reason));
    });
    await live.start();
    return live;
  })();
  streaming.starting = attempt;
  attempt.then((live) => {
    if (streaming.starting !== attempt) { live.stop().catch(() => {}); return; } // replaced meanwhile
    Object.assign(streaming, { starting: null, live });
    streaming.keepAlive = setInterval(() => live.keepAlive().catch(() => {}), KEEP_ALIVE_MS);
    avatarMode("live", "The streaming avatar speaks the answers.");
  }, (error) => {
    if (streaming.starting === attempt) streamingFailed(error);
  });
}

async function speak(text) {
  if (!ui.speak.checked) return;
  ui.speech.dataset.attempts = String(Number(ui.speech.dataset.attempts || 0) + 1);
  if (streaming.starting) {
    let timer;
    await Promise.race([streaming.starting.catch(() => null), new Promise((resolve) => { timer = setTimeout(resolve, START_WAIT_MS); })]);
    clearTimeout(timer);
  }
  if (streaming.live) {
    try {
      streaming.live.repeat(text); // the avatar says exactly this text
      setSpeech("avatar", "The avatar is speaking the answer…");
      return;
    } catch (error) {
      streamingFailed(error);
    }
  }
  speakInBrowser(text);
}

function speakInBrowser(text) {
  if (!("speechSynthesis" in window) || typeof window.SpeechSynthesisUtterance !== "function") {
    setSpeech("unavailable", "This browser cannot speak; the answer is shown as text.");
    return;
  }
  const utterance = new SpeechSynthesisUtterance(text);
  utterance.lang = document.documentElement.lang || "en";
  utterance.onend = () => setSpeech("spoken", "Finished speaking.");
  utterance.onerror = (event) => {
    // Headless browsers and machines without voices end here: the text is still on the page.
    if (event.error !== "canceled" && event.error !== "interrupted") {
      setSpeech("unavailable", `Could not speak the answer (${event.error}); it is shown as text.`);
    }
  };
  window.speechSynthesis.cancel();
  setSpeech("speaking", "Speaking the answer…");
  window.speechSynthesis.speak(utterance);
}

// -- asking ------------------------------------------------------------------------------------

async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// Reads a streamed answer into `body` as it arrives; returns {response, sources, sessionId}.
async function readStream(response, body) {
  const answer = { response: "", sources: [], sessionId: null };
  for await (const { event, data } of serverEvents(response)) {
    if (data === "[DONE]") break;
    let payload;
    try { payload = JSON.parse(data); } catch { continue; }
    if (event === "error" || payload.error) {
      const error = payload.error || payload;
      throw new GatewayError(response.status, error.code || "PROVIDER_ERROR", error.message || "the stream failed", null);
    }
    const delta = payload.delta ?? payload.token ?? payload.text ?? payload.content;
    if (typeof delta === "string") answer.response += delta;
    if (typeof payload.response === "string") answer.response = payload.response;
    if (Array.isArray(payload.sources)) answer.sources = payload.sources;
    if (typeof payload.sessionId === "string") answer.sessionId = payload.sessionId;
    if (payload.fallback === true) answer.fallback = true;
    body.textContent = answer.response;
    if (event === "done" || payload.done === true) break;
  }
  return answer;
}

async function ask(message) {
  showError("");
  showNotice("");
  // A typed question still goes out when no session can be opened: the chat route may not need
  // one. If it does (401), the reason the session failed is what the visitor is told.
  let sessionError = null;
  await ensureSession().catch((error) => { sessionError = error; });
  const history = conversation.messages.slice(-20);
  addMessage("user", message);
  conversation.messages.push({ role: "user", content: message });
  conversation.startedAt ??= Date.now();
  conversation.logged = false;
  ui.end.disabled = false;
  ui.saved.textContent = "";
  const pending = addMessage("assistant", "…");
  pending.item.setAttribute("aria-busy", "true");
  try {
    const response = await call("/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream, application/json", ...authorization() },
      body: JSON.stringify({ message, sessionId: conversation.sessionId ?? undefined, history }),
    });
    const streamed = (response.headers.get("Content-Type") || "").startsWith("text/event-stream");
    pending.item.dataset.transport = streamed ? "sse" : "json";
    const answer = streamed ? await readStream(response, pending.body) : await response.json();
    conversation.sessionId = answer.sessionId || conversation.sessionId;
    pending.body.textContent = answer.response;
    showSources(pending.item, Array.isArray(answer.sources) ? answer.sources : []);
    conversation.messages.push({ role: "assistant", content: answer.response });
    // A fallback answer: "fallback": true in the JSON body or the done event, X-Gateway-Fallback on JSON.
    if (answer.fallback === true || response.headers.get("X-Gateway-Fallback")) {
      showNotice("The chat backend is unavailable right now; this is the gateway's fallback answer.");
    }
    speak(answer.response).catch((error) => setSpeech("unavailable", "Could not speak the answer: " + reasonOf(error)));
  } catch (error) {
    pending.item.remove();
    if (sessionError && error instanceof GatewayError && error.code === "UNAUTHORIZED") {
      showError("The conversation could not start: " + sessionTrouble(sessionError));
    } else {
      showError(explain(error));
    }
  } finally {
    pending.item.removeAttribute("aria-busy");
  }
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = ui.question.value.trim();
  if (!message) return;
  ui.question.value = "";
  ui.send.disabled = true;
  try {
    await ask(message);
  } finally {
    ui.send.disabled = false;
    ui.question.focus();
  }
});

// -- ending: the transcript goes to the conversation log --------------------------------------

function logBody() {
  return JSON.stringify({
    sessionId: conversation.sessionId,
    messages: conversation.messages,
    metadata: { duration: Math.round((Date.now() - conversation.startedAt) / 1000), source: "console" },
  });
}

ui.end.addEventListener("click", async () => {
  ui.end.disabled = true;
  showError("");
  if (!conversation.messages.length) { // a session opened, nothing said: nothing to log
    await endSession();
    return;
  }
  try {
    const response = await call("/api/conversations/log", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": newId() },
      body: logBody(),
    });
    const { conversationId } = await response.json();
    ui.saved.textContent = `Conversation saved (${conversationId}). Ask again to start a new one.`;
    ui.saved.dataset.conversationId = conversationId;
    Object.assign(conversation, { sessionId: null, messages: [], startedAt: null, logged: true });
    ui.transcript.replaceChildren(element("li", { class: "empty", text: "Conversation ended. Ask a question to start a new one." }));
  } catch (error) {
    ui.end.disabled = false;
    showError("The conversation could not be saved: " + explain(error));
    return;
  }
  await endSession();
});

// Leaving the page ends the conversation too (keepalive lets the request outlive the page).
window.addEventListener("pagehide", () => {
  stopStreamingAvatar();
  if (!conversation.logged && conversation.sessionId && conversation.messages.length) {
    conversation.logged = true;
    fetch("/api/conversations/log", {
      method: "POST", keepalive: true, headers: { "Content-Type": "application/json" }, body: logBody(),
    }).catch(() => {});
  }
  if (session.chatToken) {
    const token = session.chatToken;
    Object.assign(session, { id: null, chatToken: null, expiresAt: 0 });
    fetch("/api/sessions/end", { method: "POST", keepalive: true, headers: { Authorization: "Bearer " + token } })
      .catch(() => {});
  }
});

// -- speaking the question: only where the gateway has speech-to-text ------------------------

function canRecord() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
}

const recording = { recorder: null, chunks: [], stream: null, session: null };

async function startRecording() {
  if (recording.recorder) return;
  showError("");
  try {
    recording.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    showError("The microphone is not available: " + (error.message || error.name));
    return;
  }
  recording.chunks = [];
  // The session opens while the visitor speaks; the upload waits for it.
  recording.session = ensureSession();
  recording.session.catch(() => {}); // reported when the recording is sent
  recording.recorder = new MediaRecorder(recording.stream);
  recording.recorder.ondataavailable = (event) => { if (event.data.size) recording.chunks.push(event.data); };
  recording.recorder.start();
  ui.mic.setAttribute("aria-pressed", "true");
  ui.mic.textContent = "Listening… release to send";
}

async function stopRecording() {
  const recorder = recording.recorder;
  if (!recorder) return;
  recording.recorder = null;
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.stop();
  await stopped;
  recording.stream.getTracks().forEach((track) => track.stop());
  ui.mic.setAttribute("aria-pressed", "false");
  ui.mic.textContent = "Transcribing…";
  ui.mic.disabled = true;
  try {
    try {
      await recording.session;
    } catch (error) {
      showError("Speech could not be transcribed: no avatar session could be opened: " + sessionTrouble(error));
      return;
    }
    const audio = new Blob(recording.chunks, { type: recorder.mimeType || "audio/webm" });
    const form = new FormData();
    form.append("file", audio, "question.webm");
    // The chatToken names its session; without one (no avatar sessions here) the route refuses.
    const response = await call("/api/transcribe", { method: "POST", body: form, headers: authorization() });
    const { text } = await response.json();
    if (text && text.trim()) await ask(text.trim());
    else showError("No speech was recognised. Hold the button while you speak, then release.");
  } catch (error) {
    showError("Speech could not be transcribed: " + explain(error));
  } finally {
    ui.mic.disabled = false;
    ui.mic.textContent = "Hold to speak";
  }
}

ui.mic.addEventListener("pointerdown", (event) => { event.preventDefault(); startRecording(); });
ui.mic.addEventListener("pointerup", () => stopRecording());
ui.mic.addEventListener("pointerleave", () => stopRecording());
ui.mic.addEventListener("keydown", (event) => {
  if ((event.key === " " || event.key === "Enter") && !event.repeat) { event.preventDefault(); startRecording(); }
});
ui.mic.addEventListener("keyup", (event) => {
  if (event.key === " " || event.key === "Enter") { event.preventDefault(); stopRecording(); }
});

// -- what this gateway offers ------------------------------------------------------------------

async function checkHealth() {
  let health;
  try {
    const response = await fetch("/api/health", { headers: { Accept: "application/json" } });
    health = await response.json();
    if (!health || !health.providers) throw await failure(response);
  } catch (error) {
    ui.health.textContent = "The gateway's health could not be read: " + explain(error);
    return;
  }
  const providers = health.providers;
  const backend = providers.llm === "connected" ? "the chat backend is connected"
    : providers.llm === "not_configured" ? "no chat backend is probed" : "the chat backend is not answering";
  ui.health.textContent = `Gateway ${health.status}: ${backend}.`;
  ui.health.dataset.status = health.status;
  const stt = providers.stt && providers.stt !== "not_configured";
  if (stt && canRecord()) {
    ui.mic.hidden = false;
    ui.micHelp.hidden = false;
  }
  document.body.dataset.stt = stt ? providers.stt : "none";
}

document.body.dataset.ready = "false";
checkHealth().finally(() => { document.body.dataset.ready = "true"; });
