// streamvl search page: plain JavaScript, no build step, no third-party code.
"use strict";

const API = "/api/v1";
const PAGE = 24;
const KEY_STORE = "streamvl.key";
const RECENT_STORE = "streamvl.recent";
const DEFAULT_EXAMPLES = ["a red star", "a blue circle", "a person walking", "a car turning left"];

const $ = (sel) => document.querySelector(sel);
const state = { q: "", sort: "score", stream: [], start: "", end: "", tag: [], cursor: null, loading: false,
                done: true, top: null, generation: 0, streams: [] };

// ---------------------------------------------------------------- API and the key

let keyPrompt = null;

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { ...extra, "X-API-Key": key } : extra;
}

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const res = await fetch(API + path, { ...options, headers: headers(options.headers || {}) });
    if (res.status !== 401) return res;
    await askKey(attempt > 0 || sessionStorage.getItem(KEY_STORE) ? "That key was not accepted." : "");
  }
  throw new Error("not authorised");
}

async function errorText(res) {
  try { const body = await res.json(); return body.error || res.statusText; } catch { return res.statusText; }
}

function askKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("#key-dialog");
  $("#key-error").textContent = message;
  keyPrompt = new Promise((resolve) => {
    $("#key-form").onsubmit = async (event) => {
      event.preventDefault();
      const key = $("#key").value.trim();
      if (!key) return;
      const res = await fetch(API + "/session", { method: "POST", headers: { "X-API-Key": key } });
      if (res.status === 401) { $("#key-error").textContent = "That key was not accepted."; return; }
      sessionStorage.setItem(KEY_STORE, key);  // this tab's session only
      dialog.close();
      keyPrompt = null;
      resolve();
    };
  });
  if (!dialog.open) dialog.showModal();
  return keyPrompt;
}

// ---------------------------------------------------------------- formatting

function clock(seconds) {
  const s = Math.max(0, seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(sec).padStart(2, "0");
}

function span(hit) {
  if (hit.wallclock) {
    const at = new Date(hit.wallclock * 1000);
    return at.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  return clock(hit.start) + " – " + clock(hit.end);
}

// ---------------------------------------------------------------- URL state

function readUrl() {
  const p = new URLSearchParams(location.search);
  state.q = p.get("q") || "";
  state.sort = p.get("sort") === "time" ? "time" : "score";
  state.stream = p.getAll("stream");
  state.tag = p.getAll("tag");
  state.start = p.get("start") || "";
  state.end = p.get("end") || "";
  if (p.get("view") === "streams") showView("streams");
}

function params(extra = {}) {
  const p = new URLSearchParams();
  if (state.q) p.set("q", state.q);
  if (state.sort !== "score") p.set("sort", state.sort);
  state.stream.forEach((s) => p.append("stream", s));
  state.tag.forEach((t) => p.append("tag", t));
  if (state.start) p.set("start", state.start);
  if (state.end) p.set("end", state.end);
  for (const [k, v] of Object.entries(extra)) p.set(k, v);
  return p;
}

function writeUrl() {
  const p = params();
  if (!$("#view-streams").hidden) p.set("view", "streams");
  const url = location.pathname + (p.toString() ? "?" + p : "");
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

// ---------------------------------------------------------------- search

function newSearch() {
  state.generation++;
  state.cursor = null;
  state.done = false;
  state.top = null;
  $("#grid").replaceChildren();
  renderChips();
  writeUrl();
  if (!state.q) { showEmpty(true); $("#status").textContent = ""; state.done = true; return; }
  showEmpty(false);
  loadPage();
}

async function loadPage() {
  if (state.loading || state.done || !state.q) return;
  state.loading = true;
  const generation = state.generation;
  const first = state.cursor === null;
  $("#more").hidden = first;
  if (first) $("#status").textContent = "Searching…";
  const started = performance.now();
  try {
    const res = await api("/search?" + params({ k: PAGE, ...(state.cursor ? { cursor: state.cursor } : {}) }));
    if (generation !== state.generation) return;
    if (!res.ok) { $("#status").innerHTML = ""; $("#status").append(errorLine(await errorText(res))); state.done = true; return; }
    const body = await res.json();
    if (state.top === null && body.hits.length) state.top = body.hits[0].score;
    body.hits.forEach((hit) => $("#grid").append(card(hit)));
    state.cursor = body.next_cursor;
    state.done = !body.next_cursor;
    const shown = $("#grid").children.length;
    if (first) {
      const ms = Math.round(performance.now() - started);
      $("#status").textContent = shown ? `${shown}${state.done ? "" : "+"} moments for “${state.q}” · ${ms} ms` : `Nothing found for “${state.q}”.`;
      remember(state.q);
    } else if (state.done) {
      $("#status").textContent = `${shown} moments for “${state.q}”`;
    }
  } catch (err) {
    $("#status").textContent = "The server did not answer: " + err.message;
    state.done = true;
  } finally {
    if (generation === state.generation) { state.loading = false; $("#more").hidden = true; }
    if (!state.done && nearBottom()) loadPage();
  }
}

function errorLine(text) {
  const el = document.createElement("span");
  el.className = "error";
  el.textContent = text;
  return el;
}

function nearBottom() {
  return $("#sentinel").getBoundingClientRect().top < window.innerHeight + 600;
}

function card(hit) {
  const node = $("#card").content.firstElementChild.cloneNode(true);
  node.dataset.start = hit.start;
  node.dataset.end = hit.end;
  node.dataset.stream = hit.stream_id;
  node.querySelector(".thumb").src = hit.thumbnail_url;
  node.querySelector(".thumb").alt = `${hit.stream_id} at ${clock((hit.peak[0] + hit.peak[1]) / 2)}`;
  node.querySelector(".strip").src = hit.strip_url + "&n=4";
  node.querySelector(".dur").textContent = clock(hit.end - hit.start);
  node.querySelector(".stream").textContent = hit.stream_id;
  node.querySelector(".stream").title = hit.uri;
  node.querySelector(".rank").textContent = "#" + hit.rank;
  node.querySelector(".when").textContent = span(hit);
  node.querySelector(".tags").textContent = (hit.tags || []).join(" · ");
  const rel = state.top > 0 ? Math.max(0.04, Math.min(1, hit.score / state.top)) : 0.5;
  node.querySelector(".fill").style.width = (rel * 100).toFixed(1) + "%";
  node.querySelector(".value").textContent = hit.score.toFixed(3);
  if (!hit.video_url) node.querySelector(".play").remove();
  const play = () => playInPlace(node, hit);
  node.addEventListener("click", play);
  node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); play(); } });
  return node;
}

function playInPlace(node, hit) {
  if (!hit.video_url || node.classList.contains("playing")) return;
  document.querySelectorAll(".card.playing").forEach(stopPlaying);
  const media = node.querySelector(".media");
  const video = document.createElement("video");
  video.controls = true;
  video.playsInline = true;
  video.preload = "auto";
  const [path, fragment] = hit.video_url.split("#");
  const whole = Boolean(fragment);  // the whole file: seek to the segment; a cut starts at 0
  video.src = path;
  video.addEventListener("loadedmetadata", () => {
    if (whole) video.currentTime = hit.start;
    video.play().catch(() => {});
  }, { once: true });
  if (whole) {
    video.addEventListener("timeupdate", () => {
      if (video.currentTime >= hit.end && !video.dataset.past) { video.pause(); video.dataset.past = "1"; }
    });
  }
  node._thumb = media.querySelector(".thumb");
  node._thumb.replaceWith(video);
  node.classList.add("playing");
  node.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function stopPlaying(node) {
  const video = node.querySelector("video");
  if (video) { video.pause(); video.removeAttribute("src"); video.load(); video.replaceWith(node._thumb); }
  node.classList.remove("playing");
}

function showEmpty(on) {
  $("#empty").hidden = !on;
  if (!on) return;
  const recent = JSON.parse(localStorage.getItem(RECENT_STORE) || "[]");
  const examples = recent.length ? recent : DEFAULT_EXAMPLES;
  $("#examples").replaceChildren(...examples.slice(0, 6).map((text) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.onclick = () => { $("#q").value = text; state.q = text; newSearch(); };
    return b;
  }));
}

function remember(q) {
  const recent = JSON.parse(localStorage.getItem(RECENT_STORE) || "[]").filter((x) => x !== q);
  localStorage.setItem(RECENT_STORE, JSON.stringify([q, ...recent].slice(0, 6)));
}

// ---------------------------------------------------------------- filter chips

function chip(label, onRemove) {
  const el = document.createElement("span");
  el.className = "chip on";
  el.textContent = label;
  const x = document.createElement("button");
  x.className = "x";
  x.type = "button";
  x.setAttribute("aria-label", "remove " + label);
  x.textContent = "×";
  x.onclick = (e) => { e.stopPropagation(); onRemove(); newSearch(); };
  el.append(x);
  return el;
}

function renderChips() {
  const chips = [];
  state.stream.forEach((s) => chips.push(chip("stream: " + s, () => { state.stream = state.stream.filter((x) => x !== s); })));
  if (state.start || state.end) chips.push(chip(`time: ${state.start || "…"} – ${state.end || "…"}`, () => { state.start = state.end = ""; }));
  state.tag.forEach((t) => chips.push(chip("tag: " + t, () => { state.tag = state.tag.filter((x) => x !== t); })));
  $("#active-chips").replaceChildren(...chips);
  document.querySelectorAll(".seg").forEach((b) => {
    const on = b.dataset.sort === state.sort;
    b.classList.toggle("active", on);
    b.setAttribute("aria-checked", String(on));
  });
}

function togglePopover(id) {
  document.querySelectorAll(".popover").forEach((p) => { if (p.id !== id) p.hidden = true; });
  const pop = document.getElementById(id);
  pop.hidden = !pop.hidden;
  if (id === "pop-streams" && !pop.hidden) renderStreamOptions();
  if (id === "pop-time") { $("#f-start").value = state.start; $("#f-end").value = state.end; }
}

function renderStreamOptions() {
  const box = $("#stream-options");
  if (!state.streams.length) { box.textContent = "No streams indexed yet."; return; }
  box.replaceChildren(...state.streams.map((s) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.checked = state.stream.includes(s.stream_id);
    input.onchange = () => {
      state.stream = input.checked ? [...state.stream, s.stream_id] : state.stream.filter((x) => x !== s.stream_id);
      newSearch();
    };
    label.append(input, document.createTextNode(s.stream_id));
    return label;
  }));
}

// ---------------------------------------------------------------- streams view

async function loadStreams() {
  try {
    const res = await api("/streams");
    if (!res.ok) { $("#streams-status").textContent = await errorText(res); return; }
    state.streams = await res.json();
  } catch (err) { $("#streams-status").textContent = err.message; return; }
  $("#stream-count").textContent = state.streams.length || "";
  if (!$("#view-streams").hidden) renderStreams();
}

function renderStreams() {
  $("#stream-rows").replaceChildren(...state.streams.map((s) => {
    const tr = document.createElement("tr");
    const cell = (text, cls) => { const td = document.createElement("td"); if (cls) td.className = cls; td.textContent = text; return td; };
    const name = cell(s.stream_id);
    name.style.fontWeight = "600";
    const status = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "pill " + s.status;
    pill.textContent = s.status;
    status.append(pill);
    if (s.error) { const e = document.createElement("div"); e.className = "err"; e.textContent = s.error; status.append(e); }
    const lag = s.lag_now_s != null ? s.lag_now_s.toFixed(1) + " s" : (s.live ? "–" : "");
    const remove = document.createElement("td");
    if (s.status !== "removed") {
      const b = document.createElement("button");
      b.className = "btn danger";
      b.type = "button";
      b.textContent = "Remove";
      b.onclick = () => removeStream(s.stream_id);
      remove.append(b);
    }
    tr.append(name, status, cell(String(s.frames_indexed), "num"),
              cell(s.last_committed_pts != null ? clock(s.last_committed_pts) : "–", "num"), cell(lag, "num"),
              cell(s.uri, "uri"), remove);
    return tr;
  }));
  $("#streams-status").textContent = state.streams.length ? "" : "No streams yet: add a camera URL or a file above.";
}

async function addStream(event) {
  event.preventDefault();
  const body = { uri: $("#s-uri").value.trim() };
  if ($("#s-id").value.trim()) body.id = $("#s-id").value.trim();
  if ($("#s-fps").value.trim()) body.fps = Number($("#s-fps").value);
  const res = await api("/streams", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!res.ok) { $("#streams-status").textContent = await errorText(res); return; }
  const made = await res.json();
  $("#streams-status").textContent = `Requested ${made.stream_id}` + (made.indexing ? "; indexing starts shortly." : "; a running serve-index job picks it up.");
  $("#add-stream").reset();
  loadStreams();
}

async function removeStream(id) {
  const res = await api("/streams/" + encodeURIComponent(id), { method: "DELETE" });
  $("#streams-status").textContent = res.ok ? `Removal of ${id} requested.` : await errorText(res);
  loadStreams();
}

function showView(name) {
  const streams = name === "streams";
  $("#view-streams").hidden = !streams;
  $("#view-search").hidden = streams;
  $("#tab-streams").classList.toggle("active", streams);
  $("#tab-search").classList.toggle("active", !streams);
  if (streams) renderStreams();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("#search").addEventListener("submit", (e) => { e.preventDefault(); state.q = $("#q").value.trim(); newSearch(); });
  document.querySelectorAll(".seg").forEach((b) => b.addEventListener("click", () => {
    if (state.sort !== b.dataset.sort) { state.sort = b.dataset.sort; newSearch(); }
  }));
  $("#chip-streams").onclick = () => togglePopover("pop-streams");
  $("#chip-time").onclick = () => togglePopover("pop-time");
  $("#chip-tag").onclick = () => togglePopover("pop-tag");
  $("#time-apply").onclick = () => { state.start = $("#f-start").value.trim(); state.end = $("#f-end").value.trim(); $("#pop-time").hidden = true; newSearch(); };
  $("#time-clear").onclick = () => { state.start = state.end = ""; $("#pop-time").hidden = true; newSearch(); };
  $("#tag-apply").onclick = () => {
    const t = $("#f-tag").value.trim();
    if (t && !state.tag.includes(t)) state.tag.push(t);
    $("#f-tag").value = "";
    $("#pop-tag").hidden = true;
    newSearch();
  };
  document.addEventListener("click", (e) => {
    if (!e.target.closest(".chip-menu")) document.querySelectorAll(".popover").forEach((p) => { p.hidden = true; });
  });
  $("#tab-search").onclick = () => { showView("search"); writeUrl(); };
  $("#tab-streams").onclick = () => { showView("streams"); writeUrl(); loadStreams(); };
  $("#add-stream").addEventListener("submit", addStream);
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadPage(); }, { rootMargin: "600px" })
    .observe($("#sentinel"));
  window.addEventListener("popstate", () => { readUrl(); $("#q").value = state.q; showView(new URLSearchParams(location.search).get("view") === "streams" ? "streams" : "search"); newSearchNoPush(); });
  setInterval(() => { if (!$("#view-streams").hidden) loadStreams(); }, 5000);
}

function newSearchNoPush() {
  const push = history.pushState;
  history.pushState = () => {};
  try { newSearch(); } finally { history.pushState = push; }
}

async function start() {
  readUrl();
  $("#q").value = state.q;
  wire();
  renderChips();
  showEmpty(!state.q);
  if (sessionStorage.getItem(KEY_STORE)) {  // a reload: renew the media cookie with the kept key
    await fetch(API + "/session", { method: "POST", headers: headers() });
  }
  const health = await api("/health");  // asks for the key first when the server needs one
  if (health.ok && sessionStorage.getItem(KEY_STORE) === null) await fetch(API + "/session", { method: "POST" });
  loadStreams();
  if (state.q && state.generation === 0) newSearchNoPush();  // a shared link; unless the user searched meanwhile
}

start();
