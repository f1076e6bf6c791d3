// actstream web view: live frames with open actions, an event timeline with clips, health.
// Plain JavaScript, no build step. Everything live arrives on one Server-Sent Events feed
// (/api/live); the event store (/api/events) fills the timeline's past once at start.
"use strict";

const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
  "#bfef45", "#469990", "#9a6324", "#800000", "#000075"];
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const S = {
  streams: new Map(),   // id -> {info, card parts}
  events: new Map(),    // event_id -> action (onset fields, then offset/clip fields)
  truth: new Map(),     // stream -> [true actions]
  classes: [],
  synthetic: [],
  hello: null,
  clockOffset: 0,       // server wall clock - this browser's
  selected: null,
};

const now = () => Date.now() / 1000 + S.clockOffset;
const colour = (label) => {
  const i = S.classes.indexOf(label);
  return PALETTE[(i < 0 ? S.classes.length + hash(label) : i) % PALETTE.length];
};
const hash = (s) => [...s].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7);
const fmtTime = (wall) => new Date(wall * 1000).toLocaleTimeString();
const enc = encodeURIComponent;

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

// ---- live view ------------------------------------------------------------------------
function frameWidth(card) {
  const w = Math.max(card.clientWidth, 160) * (window.devicePixelRatio || 1);
  return Math.min(960, Math.ceil(w / 64) * 64);
}

function ensureStream(info) {
  let st = S.streams.get(info.stream);
  if (!st) {
    const card = el("div", "card");
    card.dataset.stream = info.stream;
    const view = el("div", "view");
    const img = el("img");
    img.alt = `live frames of ${info.stream}`;
    const opens = el("div", "opens");
    view.append(img, opens);
    const meta = el("div", "meta");
    const name = el("strong", "", info.stream);
    const state = el("span", "state");
    const rate = el("span", "muted");
    meta.append(name, state, rate);
    card.append(view, meta);
    $("live").append(card);
    st = { info, card, img, opens, state, rate, open: new Map() };
    S.streams.set(info.stream, st);
    const opt = el("option", "", info.stream);
    opt.value = info.stream;
    $("f-stream").append(opt);
    if (S.hello && S.hello.live_frames) onScreen.observe(card);
  }
  return st;
}

// Frames flow only for cards on screen, and not at all while the tab is hidden.
const visibleCards = new Set();
const onScreen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const st = S.streams.get(e.target.dataset.stream);
    if (!st) continue;
    if (e.isIntersecting) { visibleCards.add(st); if (!document.hidden) startFrames(st); }
    else { visibleCards.delete(st); stopFrames(st); }
  }
});
document.addEventListener("visibilitychange", () => {
  for (const st of visibleCards) (document.hidden ? stopFrames : startFrames)(st);
});

function stopFrames(st) {
  st.img.removeAttribute("src");
}

function startFrames(st) {
  const fps = $("fps").value;
  st.img.src = `/api/streams/${enc(st.info.stream)}/live.mjpeg?width=${frameWidth(st.card)}&fps=${fps}`;
}

function setStreamInfo(info) {
  const st = ensureStream(info);
  st.info = info;
  setState(st, info.state);
  st.rate.textContent = `${info.fps.toFixed(1)} fps · ${info.frames_dropped} dropped`;
}

function setState(st, state) {
  st.state.textContent = state;
  st.state.className = `state ${state}`;
  st.card.dataset.state = state;
}

function showOpen(st, ev) {
  if (st.open.has(ev.event_id)) return;
  const tag = el("div", "open");
  tag.dataset.eventId = ev.event_id;
  tag.style.setProperty("--c", colour(ev.label));
  st.open.set(ev.event_id, { ev, tag });
  st.opens.append(tag);
  paintOpen(ev, tag);
}

function paintOpen(ev, tag) {
  const since = Math.max(0, now() - ev.start_wall_s);
  tag.textContent = `${ev.label} ${ev.score.toFixed(2)} · ${since.toFixed(1)} s${ev.late ? " (late)" : ""}`;
}

function hideOpen(st, id) {
  const o = st.open.get(id);
  if (o) { o.tag.remove(); st.open.delete(id); }
}

// ---- messages ---------------------------------------------------------------------------
function onMessage(m) {
  if (m.type === "heartbeat") {
    for (const [sid, state] of Object.entries(m.streams || {})) {
      const st = S.streams.get(sid);
      if (st) setState(st, state);
    }
    return;
  }
  const st = m.stream ? S.streams.get(m.stream) : null;
  if (m.type === "status") {
    if (st) setState(st, m.state);
  } else if (m.type === "onset") {
    const ev = Object.assign(S.events.get(m.event_id) || {}, m, { open: true });
    S.events.set(m.event_id, ev);
    if (st) showOpen(st, ev);
    addLabel(m.label);
  } else if (m.type === "offset") {
    const ev = Object.assign(S.events.get(m.event_id) || {}, m, { open: false });
    S.events.set(m.event_id, ev);
    if (st) hideOpen(st, m.event_id);
  } else if (m.type === "clip") {
    const ev = S.events.get(m.event_id);
    if (ev) {
      ev.clip_path = m.clip_path;
      ev.snapshot_path = m.snapshot_path;
      if (S.selected === m.event_id) showDetail(m.event_id);
    }
  }
  drawTimeline();
}

function onStats(s) {
  for (const info of s.streams) setStreamInfo(info);
  showHealth(s.status);
}

function addLabel(label) {
  if ([...$("f-label").options].some((o) => o.value === label)) return;
  const opt = el("option", "", label);
  opt.value = label;
  $("f-label").append(opt);
}

// ---- timeline ---------------------------------------------------------------------------
const bars = new Map(); // key -> element
const LANE_REM = 1.3;
const TRUTH_LANE_REM = 0.7;

function drawTimeline() {
  const range = Number($("f-range").value);
  const t1 = now();
  const t0 = t1 - range;
  const onlyStream = $("f-stream").value;
  const onlyLabel = $("f-label").value;
  const box = $("timeline");
  const seen = new Set();
  for (const [sid] of S.streams) {
    if (onlyStream && sid !== onlyStream) { hideRow(sid); hideRow(`${sid}\ttruth`); continue; }
    const track = row(box, sid, sid, false);
    const shown = [...S.events.values()].filter((ev) => ev.stream === sid &&
      (!onlyLabel || ev.label === onlyLabel) && (ev.end_wall_s ?? t1) >= t0)
      .sort((a, b) => a.start_wall_s - b.start_wall_s);
    const minDur = (range * 4) / Math.max(track.clientWidth, 1); // a bar is 3 px at least
    const laneEnds = []; // overlapping actions (two actors at once) get lanes of their own
    for (const ev of shown) {
      const end = ev.end_wall_s ?? t1;
      const lane = takeLane(laneEnds, ev.start_wall_s, Math.max(end, ev.start_wall_s + minDur));
      const key = ev.event_id;
      seen.add(key);
      const bar = place(track, key, ev.start_wall_s, end, t0, range, ev.label);
      bar.style.top = `${lane * LANE_REM + 0.1}rem`;
      bar.style.height = `${LANE_REM - 0.2}rem`;
      bar.classList.toggle("open", !ev.end_wall_s);
      bar.classList.toggle("selected", S.selected === key);
      bar.dataset.eventId = key;
      bar.dataset.lane = lane;
      bar.dataset.startWall = ev.start_wall_s;
      bar.dataset.endWall = ev.end_wall_s ?? "";
      bar.title = `${ev.label} ${ev.score.toFixed(2)} ${fmtTime(ev.start_wall_s)}` +
        (ev.end_wall_s ? `–${fmtTime(ev.end_wall_s)}` : " (open)");
    }
    track.style.height = `${Math.max(1, laneEnds.length) * LANE_REM}rem`;
    const truth = S.truth.get(sid);
    if (truth) {
      const ttrack = row(box, `${sid}\ttruth`, `${sid} truth`, true);
      const truthEnds = [];
      for (const a of [...truth].sort((x, y) => x.start_wall_s - y.start_wall_s)) {
        if (onlyLabel && a.label !== onlyLabel) continue;
        const end = Math.min(a.end_wall_s, t1);
        if (end < t0 || a.start_wall_s > t1) continue;
        const lane = takeLane(truthEnds, a.start_wall_s, Math.max(end, a.start_wall_s + minDur));
        const key = `truth\t${sid}\t${a.actor}\t${a.start_s}`;
        seen.add(key);
        const bar = place(ttrack, key, a.start_wall_s, end, t0, range, a.label);
        bar.style.top = `${lane * TRUTH_LANE_REM + 0.1}rem`;
        bar.classList.add("truth");
        bar.title = `true ${a.label} (actor ${a.actor}) ${fmtTime(a.start_wall_s)}–${fmtTime(a.end_wall_s)}`;
      }
      ttrack.style.height = `${Math.max(1, truthEnds.length) * TRUTH_LANE_REM}rem`;
    }
  }
  for (const [key, bar] of bars) if (!seen.has(key)) { bar.remove(); bars.delete(key); }
  drawAxis(t0, range);
}

// The first lane free at `start` (its last bar ended by then), taken until `end`.
function takeLane(ends, start, end) {
  let lane = ends.findIndex((e) => e <= start);
  if (lane < 0) { lane = ends.length; ends.push(end); } else ends[lane] = end;
  return lane;
}

function row(box, key, name, truth) {
  let r = box.querySelector(`.row[data-key="${CSS.escape(key)}"]`);
  if (!r) {
    r = el("div", truth ? "row truth" : "row");
    r.dataset.key = key;
    r.append(el("div", "name", name), el("div", "track"));
    box.append(r);
  }
  r.hidden = false;
  return r.querySelector(".track");
}

function hideRow(key) {
  const r = $("timeline").querySelector(`.row[data-key="${CSS.escape(key)}"]`);
  if (r) r.hidden = true;
}

function place(track, key, start, end, t0, range, label) {
  let bar = bars.get(key);
  if (!bar || bar.parentNode !== track) {
    if (bar) bar.remove();
    bar = el("div", "ev");
    if (!key.startsWith("truth\t")) bar.addEventListener("click", () => showDetail(key));
    track.append(bar);
    bars.set(key, bar);
  }
  const left = Math.max(0, (start - t0) / range);
  const right = Math.min(1, (end - t0) / range);
  bar.style.left = `${(left * 100).toFixed(3)}%`;
  bar.style.width = `${(Math.max(0, right - left) * 100).toFixed(3)}%`;
  bar.style.setProperty("--c", colour(label));
  return bar;
}

function drawAxis(t0, range) {
  let axis = $("timeline").querySelector(".axis");
  if (!axis) { axis = el("div", "axis"); $("timeline").append(axis); }
  $("timeline").append(axis); // stays last
  axis.replaceChildren();
  const step = range <= 60 ? 10 : range <= 300 ? 60 : range <= 900 ? 180 : 600;
  for (let t = Math.ceil(t0 / step) * step; t <= t0 + range; t += step) {
    const tick = el("span", "", fmtTime(t));
    tick.style.left = `${((t - t0) / range) * 100}%`;
    axis.append(tick);
  }
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of S.classes) {
    const s = el("span", "", c);
    s.style.setProperty("--c", colour(c));
    legend.append(s);
  }
  if (S.synthetic.length) legend.append(el("span", "muted", "pale rows: ground truth of synthetic streams"));
}

// ---- one action: snapshot and clip ----------------------------------------------------
function showDetail(id) {
  const ev = S.events.get(id);
  if (!ev) return;
  const changed = S.selected !== id;
  S.selected = id;
  $("detail").hidden = false;
  $("d-title").textContent = `${ev.label} on ${ev.stream} (score ${ev.score.toFixed(2)})`;
  $("d-times").textContent = `${fmtTime(ev.start_wall_s)} → ` +
    (ev.end_wall_s ? `${fmtTime(ev.end_wall_s)} (${(ev.end_wall_s - ev.start_wall_s).toFixed(1)} s, ${ev.reason})` : "still open");
  $("d-json").href = `/api/events/${enc(id)}`;
  const snap = $("d-snapshot");
  const clip = $("d-clip");
  if (ev.snapshot_path) {
    if (changed || snap.hidden) snap.src = `/api/events/${enc(id)}/snapshot.jpg`;
    snap.hidden = false;
    $("d-snap-note").textContent = "snapshot of the onset's decision frame";
  } else {
    snap.hidden = true;
    snap.removeAttribute("src");
    $("d-snap-note").textContent = "no snapshot yet";
  }
  if (ev.clip_path) {
    if (changed || clip.hidden) {
      clip.src = `/api/events/${enc(id)}/clip.mp4`;
      clip.play().catch(() => {});
    }
    clip.hidden = false;
    $("d-clip-note").textContent = "evidence clip";
  } else {
    clip.hidden = true;
    clip.removeAttribute("src");
    $("d-clip-note").textContent = S.hello && S.hello.clips
      ? "the clip is written once the action's post-roll is recorded"
      : "clips are off in this detector";
  }
  drawTimeline();
}

// ---- health -----------------------------------------------------------------------------
function showHealth(h) {
  if (!h) return;
  const info = $("health-info");
  info.replaceChildren();
  const up = h.uptime_s < 120 ? `${h.uptime_s.toFixed(0)} s` : `${(h.uptime_s / 60).toFixed(1)} min`;
  const batch = h.batch_size_mean == null ? "–" : h.batch_size_mean.toFixed(2);
  const versions = Object.entries(h.versions || {}).map(([k, v]) => `${k} ${v || "?"}`).join(", ");
  for (const [k, v] of [["state", h.ok ? "publishing" : "publisher stopped"], ["uptime", up],
    ["backend", h.backend || "?"], ["model", h.model || "?"], ["backbone batch (mean, last minute)", batch],
    ["live pages", `${h.live_clients} (${h.live_dropped} dropped)`], ["versions", versions]]) {
    const tr = el("tr");
    tr.append(el("th", "", k), el("td", "", String(v)));
    info.append(tr);
  }
  fill($("health-stages").tBodies[0], h.stages_ms);
  fill($("health-latency").tBodies[0], h.frame_to_event_ms);
  $("summary").textContent = `${S.streams.size} stream(s) · ${h.backend || ""} · up ${up}`;
}

function fill(body, rows) {
  body.replaceChildren();
  for (const [name, [p50, p99]] of Object.entries(rows || {})) {
    const tr = el("tr");
    const f = (v) => (v == null ? "–" : v.toFixed(2));
    tr.append(el("td", "", name), el("td", "", f(p50)), el("td", "", f(p99)));
    body.append(tr);
  }
}

// ---- start ------------------------------------------------------------------------------
async function loadPast(range) {
  if (!S.hello.store) return;
  const since = Math.floor(now() - range);
  try {
    const rows = await getJSON(`/api/events?since=${since}&limit=1000`);
    for (const r of rows) {
      if (S.events.has(r.event_id)) continue;
      S.events.set(r.event_id, Object.assign({ open: r.end_wall_s == null }, r));
      addLabel(r.label);
    }
  } catch (e) {
    $("summary").textContent = `event store: ${e.message}`;
  }
  drawTimeline();
}

async function loadTruth() {
  for (const sid of S.synthetic) {
    try {
      S.truth.set(sid, await getJSON(`/api/streams/${enc(sid)}/truth`));
    } catch (e) { /* the stream may be gone */ }
  }
}

function connect() {
  const feed = new EventSource("/api/live");
  feed.addEventListener("hello", (e) => {
    const h = JSON.parse(e.data);
    S.hello = h;
    S.clockOffset = h.wall_s - Date.now() / 1000;
    S.classes = h.status.classes || [];
    S.synthetic = h.synthetic || [];
    for (const c of S.classes) addLabel(c);
    drawLegend();
    for (const info of h.streams) {
      setStreamInfo(info);
      const st = S.streams.get(info.stream);
      for (const o of info.open_actions) {
        const ev = Object.assign(S.events.get(o.event_id) || {}, o, { stream: info.stream, open: true });
        S.events.set(o.event_id, ev);
        showOpen(st, ev);
      }
    }
    showHealth(h.status);
    loadPast(Number($("f-range").value));
    loadTruth().then(drawTimeline);
  });
  feed.addEventListener("message", (e) => onMessage(JSON.parse(e.data)));
  feed.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
}

$("fps").addEventListener("change", () => { for (const st of visibleCards) startFrames(st); });
for (const id of ["f-stream", "f-label"]) $(id).addEventListener("change", drawTimeline);
$("f-range").addEventListener("change", () => loadPast(Number($("f-range").value)));
$("d-close").addEventListener("click", () => {
  S.selected = null;
  $("detail").hidden = true;
  $("d-clip").pause();
  drawTimeline();
});
setInterval(() => {
  for (const st of S.streams.values()) for (const { ev, tag } of st.open.values()) paintOpen(ev, tag);
}, 250);
setInterval(drawTimeline, 1000);
setInterval(() => { if (S.synthetic.length) loadTruth(); }, 5000);
connect();
