// The homefeed page: one user's profile, realtime sequence, candidates and feed, from the app's JSON API
// (homefeed/ui/app.py). Plain DOM code, no framework or build step; every value from the API is inserted as text.
"use strict";

const FEED_SIZE = 12;
const state = { user: null, requestId: null, config: null };
const $ = (id) => document.getElementById(id);

// One colour per interest (the world has no images): golden-angle hues keep neighbouring ids apart, and three
// lightness steps tell apart ids whose hues land close together.
function colour(interestId) {
  if (interestId === null || interestId === undefined) return "#999";
  return `hsl(${(interestId * 137.508) % 360}, 55%, ${34 + (interestId % 3) * 9}%)`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "style") Object.assign(node.style, value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const when = (ts) => new Date(ts).toISOString().replace("T", " ").slice(0, 19);
const short = (ts) => when(ts).slice(5); // the sequence's column: month-day and time, the year is the clock's

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || body.detail?.[0]?.msg || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

async function loadConfig() {
  const config = await api("/api/config");
  state.config = config;
  $("dashboard-link").href = config.dashboard_url;
  $("dashboard-link").title = config.dashboard_url;
  const report = $("report-link");
  report.replaceChildren(
    config.report
      ? el("a", { href: config.report.url, target: "_blank", title: config.report.path }, "latest experiment report")
      : el("span", { class: "meta" }, `no experiment report under ${config.experiments}`),
  );
  if (!config.servers_read_copy) {
    $("note").textContent = "The model servers were started elsewhere: actions go to this page's copy of the " +
      "feature repository, which they do not read, so the feed will not respond to them.";
    $("note").hidden = false;
  }
  const users = await api("/api/users");
  $("user-list").replaceChildren(...users.map((u) => el("option", { value: u.user_id }, `${u.segment}`)));
}

function renderUser(user) {
  const interests = user.interests.length
    ? user.interests.map((i) => el("span", { class: "chip", style: { background: colour(i.interest_id) } }, i.name))
    : [el("span", { class: "empty" }, "none declared")];
  const rows = user.sequence.map((a) =>
    el("tr", { dataset: { pinId: a.pin_id } },
      el("td", { title: when(a.ts) }, short(a.ts)),
      el("td", { class: "v" }, a.pin_id),
      el("td", { class: `act-${a.action}` }, a.action),
      el("td", {}, el("span", { class: "dot", style: { background: colour(a.interest_id) } }), a.interest ?? "?"),
    ));
  $("user-panel").replaceChildren(
    el("h2", {}, `user ${user.user_id}`),
    el("div", {}, "segment ", el("b", { id: "segment" }, user.segment),
      user.known_online ? "" : el("span", { class: "meta" }, " (no online profile: served as new)")),
    el("h3", {}, "declared interests"),
    el("div", { id: "interests" }, ...interests),
    el("h3", {}, `recent actions (${user.sequence.length}, newest first)`),
    el("div", { class: "scroll" },
      el("table", { class: "list", id: "sequence" },
        el("tr", {}, el("th", {}, "time (UTC)"), el("th", {}, "pin"), el("th", {}, "action"), el("th", {}, "interest")),
        ...rows)),
  );
}

function tile(pin) {
  const scores = [["click", pin.click], ["repin", pin.repin], ["hide", pin.hide]].map(([head, value]) =>
    el("tr", {}, el("td", {}, head), el("td", { class: "v" }, fmt(value))));
  return el("div", { class: "tile", dataset: { pinId: pin.pin_id } },
    el("div", { class: "swatch", style: { background: colour(pin.interest_id) } }, pin.interest ?? "?"),
    el("div", { class: "body" },
      el("div", {}, el("b", {}, `pin ${pin.pin_id}`)),
      el("div", { class: "source" }, pin.source),
      el("table", {}, ...scores,
        el("tr", { class: "blend" }, el("td", {}, "score"), el("td", { class: "v" }, fmt(pin.score)))),
      el("div", { class: "actions" },
        el("button", { class: "repin", type: "button", onclick: () => act(pin.pin_id, "repin") }, "repin"),
        el("button", { class: "hide", type: "button", onclick: () => act(pin.pin_id, "hide") }, "hide"),
      )));
}

function renderFeed(feed) {
  state.requestId = feed.request_id;
  $("feed-meta").textContent = `request ${feed.request_id} · ${feed.mode}${feed.reason ? ` (${feed.reason})` : ""}` +
    ` · ${feed.pins.length} of ${feed.candidates} candidates · ${feed.hidden_excluded} hidden excluded` +
    (feed.unscored ? ` · ${feed.unscored} unscored` : "");
  $("feed").replaceChildren(...(feed.pins.length ? feed.pins.map(tile) : [el("p", { class: "empty" }, "no pins")]));
  $("candidates-meta").textContent = `${feed.retrieved.length}, best first`;
  $("sources").replaceChildren(...Object.entries(feed.sources).map(([source, n]) =>
    el("span", { class: "chip", style: { background: "#607d8b" } }, `${source}: ${n}`)));
  const shown = new Set(feed.pins.map((p) => p.pin_id));
  $("candidates").className = "list";
  $("candidates").replaceChildren(
    el("tr", {}, el("th", {}, "#"), el("th", {}, "pin"), el("th", {}, "interest"), el("th", {}, "source"),
      el("th", {}, "retrieval score"), el("th", {}, "in feed")),
    ...feed.retrieved.map((c, i) => el("tr", {},
      el("td", { class: "v" }, i + 1), el("td", { class: "v" }, c.pin_id),
      el("td", {}, el("span", { class: "dot", style: { background: colour(c.interest_id) } }), c.interest ?? "?"),
      el("td", {}, c.source), el("td", { class: "v" }, fmt(c.score)), el("td", {}, shown.has(c.pin_id) ? "✓" : ""))),
  );
}

async function show(userId) {
  state.user = userId;
  document.body.classList.add("busy");
  try {
    const [user, feed] = await Promise.all([
      api(`/api/users/${userId}`),
      api(`/api/users/${userId}/feed?n=${FEED_SIZE}`),
    ]);
    if (state.user !== userId) return; // another user was picked meanwhile
    showError("");
    renderUser(user);
    renderFeed(feed);
    location.hash = `user=${userId}`;
  } catch (err) {
    showError(err.message);
    $("user-panel").replaceChildren(el("p", { class: "empty" }, "No user shown."));
    $("feed").replaceChildren();
    $("candidates").replaceChildren();
    $("sources").replaceChildren();
    $("feed-meta").textContent = $("candidates-meta").textContent = "";
  } finally {
    document.body.classList.remove("busy");
  }
}

async function act(pinId, action) {
  try {
    await api("/api/actions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: state.user, pin_id: pinId, action, request_id: state.requestId }),
    });
  } catch (err) {
    showError(err.message);
    return;
  }
  await show(state.user);
}

async function tick() {
  if (!state.config) return;
  try {
    const config = await api("/api/config");
    $("clock").textContent = `now ${when(config.now_ts)} UTC`;
  } catch (err) { /* the clock is decoration: a failed poll is shown by the next real request */ }
}

$("pick").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("user-input").value.trim();
  if (value !== "") show(Number(value));
});

loadConfig()
  .then(() => {
    tick();
    setInterval(tick, 5000);
    const match = /user=(\d+)/.exec(location.hash);
    if (match) {
      $("user-input").value = match[1];
      show(Number(match[1]));
    }
  })
  .catch((err) => showError(`could not load the page's settings: ${err.message}`));
