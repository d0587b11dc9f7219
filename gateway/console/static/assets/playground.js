// The playground: a visitor's conversation with the avatar, through this gateway's public routes only.
//
// - Typed questions go to POST /api/chat. The request asks for a stream first
//   (Accept: text/event-stream) and reads whichever comes back: server-sent events where the
//   gateway streams, the contract's JSON answer where it does not.
// - Spoken questions (once /api/health reports a speech-to-text provider) are recorded in the
//   browser and sent to POST /api/transcribe; the text then goes to /api/chat like a typed one.
// - Answers are spoken by the browser (Web Speech API), the stand-in for a streaming avatar.
// - "End conversation" (or leaving the page) logs the transcript via POST /api/conversations/log.
import { GatewayError, call, element, explain, failure, newId, safeUrl } from "./api.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("ask"), question: $("question"), send: $("send"), mic: $("mic"), micHelp: $("mic-help"),
  transcript: $("transcript"), error: $("error"), notice: $("notice"), speak: $("speak"),
  speech: $("speech-status"), avatar: $("avatar"), end: $("end"), saved: $("saved"), health: $("health"),
};

const conversation = { sessionId: null, messages: [], startedAt: null, logged: true };

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

function speak(text) {
  if (!ui.speak.checked) return;
  ui.speech.dataset.attempts = String(Number(ui.speech.dataset.attempts || 0) + 1);
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
      headers: { "Content-Type": "application/json", Accept: "text/event-stream, application/json" },
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
    speak(answer.response);
  } catch (error) {
    pending.item.remove();
    showError(explain(error));
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
  if (!conversation.sessionId || !conversation.messages.length) return;
  ui.end.disabled = true;
  showError("");
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
  }
});

// Leaving the page ends the conversation too (keepalive lets the request outlive the page).
window.addEventListener("pagehide", () => {
  if (conversation.logged || !conversation.sessionId) return;
  conversation.logged = true;
  fetch("/api/conversations/log", {
    method: "POST", keepalive: true, headers: { "Content-Type": "application/json" }, body: logBody(),
  }).catch(() => {});
});

// -- speaking the question: only where the gateway has speech-to-text ------------------------

function canRecord() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
}

const recording = { recorder: null, chunks: [], stream: null };

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
    const audio = new Blob(recording.chunks, { type: recorder.mimeType || "audio/webm" });
    const form = new FormData();
    form.append("file", audio, "question.webm");
    const query = conversation.sessionId ? "?sessionId=" + encodeURIComponent(conversation.sessionId) : "";
    const response = await call("/api/transcribe" + query, { method: "POST", body: form });
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
