// streamvl events view: watches, a live feed of their events (Server-Sent Events read with fetch, so
// the API key can go in a header; resumed with Last-Event-ID), a badge of unseen events, and
// "Notify me", which turns the current search into a watch. Uses app.js's api(), headers() and $().
"use strict";

const feed = { last: null, unseen: 0, watches: new Map(), events: new Map() };

function eventsVisible() { return !$("#view-events").hidden; }

function showEvents(on) {
  $("#view-events").hidden = !on;
  $("#tab-events").classList.toggle("active", on);
  if (on) {
    $("#view-search").hidden = true;
    $("#view-streams").hidden = true;
    $("#tab-search").classList.remove("active");
    $("#tab-streams").classList.remove("active");
    feed.unseen = 0;
    renderBadge();
    loadWatches();
  }
}

function renderBadge() {
  const badge = $("#event-badge");
  badge.hidden = feed.unseen === 0;
  badge.textContent = feed.unseen > 99 ? "99+" : String(feed.unseen);
}

async function loadWatches() {
  const res = await api("/watches");
  if (!res.ok) return;
  feed.watches = new Map((await res.json()).map((w) => [w.watch_id, w]));
  const list = $("#watch-list");
  list.replaceChildren();
  for (const w of feed.watches.values()) {
    const chip = document.createElement("span");
    chip.className = "watch";
    const steps = (w.then && w.then.length) ? ` (${[w.text, ...w.then].join(" → ")} within ${w.within}s)` : "";
    chip.textContent = `${w.name}${steps} ≥ ${w.threshold.toFixed(2)}` + (w.streams.length ? ` · ${w.streams.join(", ")}` : "");
    const x = document.createElement("button");
    x.type = "button";
    x.textContent = "×";
    x.title = "Remove this watch";
    x.onclick = async () => { await api("/watches/" + encodeURIComponent(w.watch_id), { method: "DELETE" }); loadWatches(); };
    chip.append(x);
    list.append(chip);
  }
  if (!feed.watches.size) list.textContent = "No watches yet: search for something, then press “Notify me”.";
}

function renderEvent(ev) {
  let node = feed.events.get(ev.event_id);
  const fresh = !node;
  if (fresh) {
    node = document.createElement("article");
    node.className = "event new";
    node.innerHTML = '<img alt="" loading="lazy"><div class="meta"><span class="what"></span><span class="where muted"></span><span class="score muted"></span></div>';
    feed.events.set(ev.event_id, node);
    $("#event-feed").prepend(node);
  }
  const watch = feed.watches.get(ev.watch_id);
  node.querySelector("img").src = ev.thumbnail_url;
  node.querySelector(".what").textContent = watch ? watch.name : ev.watch_id;
  if (!watch) {  // a watch made elsewhere since the list was loaded
    loadWatches().then(() => { const w = feed.watches.get(ev.watch_id); if (w) node.querySelector(".what").textContent = w.name; });
  }
  node.querySelector(".where").textContent = `${ev.stream_id} · ${clock(ev.start)}–${clock(ev.end)} · ${ev.status}`;
  node.querySelector(".score").textContent = `peak ${ev.peak_score.toFixed(3)} at ${clock(ev.peak_time)} · ${new Date(ev.opened_at).toLocaleTimeString()}`;
  if (ev.steps && ev.steps.length) renderSteps(node, ev);
  if (fresh && !eventsVisible()) { feed.unseen += 1; renderBadge(); }
}

// A sequence watch's event: each step's time and score, with a picture of each step.
function renderSteps(node, ev) {
  let steps = node.querySelector(".steps");
  if (!steps) {
    steps = document.createElement("ol");
    steps.className = "steps";
    node.querySelector(".meta").append(steps);
  }
  steps.replaceChildren(...ev.steps.map((s) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.alt = "";
    img.loading = "lazy";
    img.src = `${API}/streams/${encodeURIComponent(ev.stream_id)}/thumbnail.jpg?t=${s.start.toFixed(3)}`;
    const label = document.createElement("span");
    label.textContent = `${s.text} · ${clock(s.start)}–${clock(s.end)} · ${s.score.toFixed(3)}`;
    li.append(img, label);
    return li;
  }));
}

// Read the SSE feed with fetch (EventSource cannot send the API key); reconnect after a drop.
async function follow() {
  for (;;) {
    try {
      const extra = feed.last ? { "Last-Event-ID": feed.last } : {};
      const res = await fetch(API + "/events/stream", { headers: headers(extra) });
      if (res.status === 401) { await api("/health"); continue; }  // asks for the key
      $("#feed-state").textContent = "live";
      const reader = res.body.getReader();
      const text = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += text.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null, data = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data = line.slice(6);
          }
          if (data) { renderEvent(JSON.parse(data)); feed.last = id; }
        }
      }
    } catch (err) { /* the server went away: try again shortly */ }
    $("#feed-state").textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// "Notify me": the current search becomes a watch; its threshold is the median score of the hits shown.
async function notifyMe() {
  if (!state.q) { $("#status").textContent = "Search for something first."; return; }
  const scores = [...document.querySelectorAll("#grid .score .value")].map((n) => Number(n.textContent)).sort((a, b) => a - b);
  const body = { text: state.q, stream: state.stream };
  if (scores.length) body.threshold = scores[Math.floor(scores.length / 2)];
  const res = await api("/watches", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  $("#status").textContent = res.ok ? `Watching for “${state.q}”: new matching moments appear under Events.` : await errorText(res);
  if (res.ok) loadWatches();
}

function wireEvents() {
  $("#tab-events").addEventListener("click", () => showEvents(true));
  $("#tab-search").addEventListener("click", () => showEvents(false));
  $("#tab-streams").addEventListener("click", () => showEvents(false));
  $("#notify").addEventListener("click", notifyMe);
  loadWatches().finally(follow);
}

wireEvents();
