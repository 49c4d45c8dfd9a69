// The stratus dashboard: one page, no framework, no build step. It reads the same /v1 API as
// the CLI with the token the operator signs in with; the server refuses what a role may not
// do, and the page hides it as well.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const h = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSS object model: the page's policy refuses inline style attributes.
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
};
const S = (tag, attrs = {}, ...kids) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const usd = (x) => {
  const a = Math.abs(x);
  if (a >= 1e9) return `$${(x / 1e9).toFixed(2)}B`;
  if (a >= 1e6) return `$${(x / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `$${(x / 1e3).toFixed(1)}k`;
  return `$${x.toFixed(2)}`;
};
const num = (x, d = 0) => Number(x).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const mw = (v) => (v < 1 ? v.toFixed(3) : num(v, 1));
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";

// ---- API and sign-in ------------------------------------------------------------------
const state = { token: sessionStorage.getItem("stratus-token"), role: null, timers: [], loadMs: {} };

class ApiError extends Error {
  constructor(status, body) {
    super(typeof body === "object" && body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const text = await r.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* text */ }
  if (r.status === 401) { signOut("Your token was not accepted; sign in again."); throw new ApiError(401, body); }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function signOut(message) {
  state.token = null;
  state.role = null;
  sessionStorage.removeItem("stratus-token");
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#signin-error").textContent = message || "";
}

async function signIn(token) {
  state.token = token;
  try {
    const me = await api("/v1/whoami");
    state.role = me.role;
    sessionStorage.setItem("stratus-token", token);
    document.body.classList.toggle("viewer", me.role === "viewer");
    $("#who").textContent = `signed in as ${me.role}`;
    $("#signin").hidden = true;
    $("#signout").hidden = false;
    route();
  } catch (e) {
    if (e.status !== 401) $("#signin-error").textContent = e.message;
  }
}

$("#signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("#signin-error").textContent = "";
  signIn($("#token").value.trim());
});
$("#signout").addEventListener("click", () => signOut(""));

// ---- Charts ---------------------------------------------------------------------------
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Line chart: series [{name, points:[[x,y]]}], x numeric (or ms when xTime).
function lineChart({ title, xLabel, yLabel, series, xTime = false, yFmt = (v) => num(v, 1), reference }) {
  const W = 640, H = 300, L = 70, R = 34, T = 30, B = 46;
  series = series.filter((s) => s.points.length);
  if (!series.length) return h("p", { class: "muted" }, `${title}: no data yet.`);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(reference ? [reference.value] : []);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
  const y1 = niceMax(Math.max(0, ...ys));
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - y / y1) * (H - T - B);
  const svg = S("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.append(S("text", { x: W / 2, y: 18, "text-anchor": "middle", "font-size": 13, "font-weight": 600 }, title));
  for (let i = 0; i <= 4; i++) {
    const v = (y1 * i) / 4;
    svg.append(S("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#e3e7ec" }));
    svg.append(S("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6675" }, yFmt(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const v = x0 + ((x1 - x0) * i) / 4;
    const label = xTime ? new Date(v).toISOString().slice(11, 19) : num(v, Math.abs(x1 - x0) < 10 ? 1 : 0);
    svg.append(S("text", { x: sx(v), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#5b6675" }, label));
  }
  svg.append(S("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "font-size": 12 }, xLabel));
  svg.append(S("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${(T + H - B) / 2})` }, yLabel));
  if (reference) {
    svg.append(S("line", { x1: L, x2: W - R, y1: sy(reference.value), y2: sy(reference.value), stroke: "#333", "stroke-dasharray": "5 4" }));
  }
  series.forEach((s, i) => {
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg.append(S("path", { d, fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2 }));
    if (s.points.length === 1) svg.append(S("circle", { cx: sx(s.points[0][0]), cy: sy(s.points[0][1]), r: 3, fill: PALETTE[i % PALETTE.length] }));
  });
  const legend = h("div", { class: "legend" }, series.map((s, i) =>
    h("span", {}, h("span", { style: `display:inline-block;width:14px;height:3px;background:${PALETTE[i % PALETTE.length]};vertical-align:middle;margin-right:4px` }), s.name)),
    reference ? h("span", {}, "- - ", reference.name) : null);
  return h("div", {}, svg, legend);
}

// Horizontal bars: items [{label, value, cap?}].
function barChart({ title, unit, items, fmt = (v) => num(v, 1) }) {
  const rowH = 22, L = 230, R = 90, W = 640;
  const H = 34 + items.length * rowH + 28;
  const max = niceMax(Math.max(1e-9, ...items.map((i) => Math.max(i.value, i.cap || 0))));
  const sx = (v) => L + (v / max) * (W - L - R);
  const svg = S("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.append(S("text", { x: W / 2, y: 18, "text-anchor": "middle", "font-size": 13, "font-weight": 600 }, title));
  items.forEach((it, k) => {
    const y = 30 + k * rowH;
    svg.append(S("text", { x: L - 6, y: y + 14, "text-anchor": "end", "font-size": 11 }, it.label));
    if (it.cap) svg.append(S("rect", { x: L, y: y + 3, width: sx(it.cap) - L, height: rowH - 8, fill: "#e3e7ec" }));
    svg.append(S("rect", { x: L, y: y + 3, width: Math.max(1, sx(it.value) - L), height: rowH - 8, fill: it.cap && it.value > it.cap ? "#d55e00" : "#0072b2" }));
    svg.append(S("text", { x: sx(Math.max(it.value, it.cap || 0)) + 4, y: y + 14, "font-size": 11, fill: "#5b6675" },
      it.cap ? `${fmt(it.value)} / ${fmt(it.cap)} ${unit}` : `${fmt(it.value)} ${unit}`));
  });
  svg.append(S("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", "font-size": 12 }, unit));
  return svg;
}

function table(headers, rows, numeric = []) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x, i) => h("th", { class: numeric.includes(i) ? "num" : null }, x)))),
    h("tbody", {}, rows.map((r) => r instanceof Node ? r : h("tr", {}, r.map((c, i) => h("td", { class: numeric.includes(i) ? "num" : null }, c))))));
}

const card = (k, v) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));

// ---- Pages ------------------------------------------------------------------------------
const pages = {};

pages.fleet = async (main) => {
  const fleet = await api("/v1/fleet");
  const regions = [];
  const accs = new Set();
  for (const p of fleet.providers) for (const r of p.regions) {
    for (const q of r.pools) accs.add(q.accelerator);
    regions.push({ provider: p.name, id: `${p.name}:${r.name}`, r });
  }
  const controls = h("div", { class: "controls" },
    h("label", { for: "f-provider" }, "Provider"),
    h("select", { id: "f-provider" }, h("option", { value: "" }, "all"), fleet.providers.map((p) => h("option", { value: p.name }, p.name))),
    h("label", { for: "f-acc" }, "Accelerator"),
    h("select", { id: "f-acc" }, h("option", { value: "" }, "all"), [...accs].sort().map((a) => h("option", { value: a }, a))),
    h("label", { for: "f-colour" }, "Colour by"),
    h("select", { id: "f-colour" }, h("option", { value: "price" }, "cheapest on-demand $ per chip-hour"), h("option", { value: "carbon" }, "grid carbon gCO2e/kWh")));
  const mapBox = h("div", { class: "panel map" });
  const legend = h("div", { class: "legend" });
  const tableBox = h("div", { class: "panel", style: "max-height:480px" });
  const cards = h("div", { class: "cards" });
  main.append(h("h1", {}, "Fleet"), cards, controls, mapBox, legend, h("h2", {}, "Pools"), tableBox);
  const land = await (await fetch("/ui/world.svgpath")).text();

  const draw = () => {
    const prov = $("#f-provider").value, acc = $("#f-acc").value, by = $("#f-colour").value;
    const shown = regions.filter((x) => !prov || x.provider === prov).map((x) => {
      const pools = x.r.pools.filter((q) => !acc || q.accelerator === acc);
      const chips = pools.reduce((s, q) => s + (q.nodes + (q.spot_nodes || 0)) * q.chips_per_node, 0);
      const price = Math.min(...pools.map((q) => q.on_demand_per_node_hour / q.chips_per_node));
      return Object.assign({}, x, { pools, chips, price });
    }).filter((x) => !acc || x.pools.length);
    const metric = (x) => by === "price" ? x.price : x.r.carbon_g_per_kwh;
    const vals = shown.map(metric).filter(Number.isFinite).sort((a, b) => a - b);
    const lo = vals[0] || 0, hi = vals[vals.length - 1] || 1;
    const colour = (v) => {
      const t = hi > lo ? (v - lo) / (hi - lo) : 0;
      const stops = [[26, 152, 80], [254, 224, 139], [215, 48, 39]];
      const [a, b, u] = t < 0.5 ? [stops[0], stops[1], t * 2] : [stops[1], stops[2], (t - 0.5) * 2];
      return `rgb(${a.map((c, i) => Math.round(c + (b[i] - c) * u)).join(",")})`;
    };
    const maxChips = Math.max(1, ...shown.map((x) => x.chips));
    const svg = S("svg", { viewBox: "0 28 1000 392", role: "img", "aria-label": "World map of regions" },
      S("path", { class: "land", d: land }),
      shown.sort((a, b) => b.chips - a.chips).map((x) => S("circle", {
        cx: ((x.r.lon + 180) / 360 * 1000).toFixed(1), cy: ((90 - x.r.lat) / 180 * 500).toFixed(1),
        r: (2.5 + 14 * Math.sqrt(x.chips / maxChips)).toFixed(1), fill: colour(metric(x)),
        "data-region": x.id, class: "region",
      }, S("title", {}, `${x.id} (${x.r.location || ""}): ${num(x.chips)} chips, from $${x.price.toFixed(2)}/chip-h, ${num(x.r.carbon_g_per_kwh)} gCO2e/kWh, cap ${num(x.r.power_cap_mw, 1)} MW`))));
    mapBox.replaceChildren(svg);
    legend.replaceChildren(h("span", {}, "circle area ∝ chips obtainable;"),
      h("span", {}, by === "price" ? `$${lo.toFixed(2)}` : `${num(lo)} g`), h("span", { class: "ramp" }),
      h("span", {}, by === "price" ? `$${hi.toFixed(2)} per chip-hour` : `${num(hi)} gCO2e/kWh`));
    cards.replaceChildren(card("providers", new Set(shown.map((x) => x.provider)).size), card("regions", shown.length),
      card("pools", num(shown.reduce((s, x) => s + x.pools.length, 0))), card("chips obtainable (on-demand + spot)", num(shown.reduce((s, x) => s + x.chips, 0))));
    const rows = shown.flatMap((x) => x.pools.map((q) => [q.id, q.accelerator, num(q.chips_per_node), num(q.nodes),
      `$${q.on_demand_per_node_hour.toFixed(2)}`, q.spot_per_node_hour ? `$${q.spot_per_node_hour.toFixed(2)}` : "—",
      q.committed ? `${q.committed.nodes} @ $${q.committed.rate_per_node_hour.toFixed(2)}` : "—", num(x.r.carbon_g_per_kwh)]));
    tableBox.replaceChildren(table(["pool", "accelerator", "chips/node", "nodes", "on-demand $/node-h", "spot $/node-h", "committed", "gCO2e/kWh"], rows, [2, 3, 4, 5, 7]));
  };
  for (const id of ["#f-provider", "#f-acc", "#f-colour"]) $(id).addEventListener("change", draw);
  draw();
};

pages.plan = async (main) => {
  main.append(h("h1", {}, "Plan"));
  let stored;
  try { stored = await api("/v1/plan"); } catch (e) {
    if (e.status === 404) { main.append(h("p", { class: "muted" }, "No plan yet: apply workloads first.")); return; }
    throw e;
  }
  const p = stored.plan;
  const gap = p.lower_bound_per_hour > 0 ? (p.objective_per_hour / p.lower_bound_per_hour - 1) * 100 : 0;
  main.append(h("div", { class: "cards" },
    card("plan", `#${stored.id} · ${when(stored.created_ms)}`), card("cost", `${usd(p.cost_per_hour)}/h`),
    card("objective / lower bound", `${usd(p.objective_per_hour)} / ${usd(p.lower_bound_per_hour)} per h`),
    card("gap to bound", `${gap.toFixed(2)} %`), card("placed / unplaced", `${p.placements.length} / ${p.unplaced.length}`)));
  const byProv = Object.entries(p.summary.by_provider).map(([k, v]) => ({ label: k, value: v.cost_per_hour }));
  main.append(h("div", { class: "two" },
    h("div", { class: "panel" }, barChart({ title: "Cost per hour by provider", unit: "$/h", items: byProv, fmt: (v) => num(v, 0) })),
    h("div", { class: "panel", id: "history" }, h("h2", {}, "Plan history"))));
  const groups = new Map();
  for (const x of p.placements) {
    const k = `${x.provider} · ${x.region} · ${x.accelerator}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(x);
  }
  const rows = [];
  for (const [k, xs] of [...groups].sort()) {
    rows.push(h("tr", { class: "group" }, h("td", { colspan: 6 }, `${k} — ${xs.length} ${xs.length === 1 ? "unit" : "units"}, ${usd(xs.reduce((s, x) => s + x.cost_per_hour, 0))}/h`)));
    for (const x of xs) rows.push(h("tr", { "data-unit": x.unit }, h("td", {}, x.unit), h("td", {}, x.pool), h("td", {}, x.category),
      h("td", { class: "num" }, num(x.chips)), h("td", { class: "num" }, usd(x.cost_per_hour)), h("td", { class: "small" }, x.explanation)));
  }
  main.append(h("h2", {}, "Placements by provider, region and accelerator"),
    h("div", { class: "panel", id: "placements" }, table(["unit", "pool", "bought as", "chips", "$/h", "why here"], rows, [3, 4])));
  main.append(h("h2", {}, "Unplaced"), h("div", { class: "panel", id: "unplaced" },
    p.unplaced.length ? table(["unit", "constraint", "reason"], p.unplaced.map((u) => [u.unit, u.constraint, u.reason])) : h("p", { class: "muted" }, "Everything is placed.")));
  const hist = await api("/v1/plans?limit=20");
  const box = $("#history");
  const diffBox = h("div", {});
  box.append(table(["plan", "when", "$/h", "placed", "unplaced", ""], hist.plans.map((q) => [
    `#${q.id}`, when(q.created_ms), usd(q.cost_per_hour), q.placed, q.unplaced,
    h("button", { onclick: async () => {
      const d = await api(`/v1/plans/${q.id}/diff`);
      diffBox.replaceChildren(h("h2", {}, `Plan #${q.id} against ${d.against ? "#" + d.against : "nothing"}`),
        h("p", {}, `${d.added.length} added, ${d.removed.length} removed, ${d.moved.length} moved`),
        d.moved.length ? table(["unit", "from", "to"], d.moved.map((m) => [m.unit, `${m.from.pool} (${m.from.category})`, `${m.to.pool} (${m.to.category})`])) : null,
        d.added.length ? table(["added", "pool"], d.added.map((m) => [m.unit, m.pool])) : null,
        d.removed.length ? table(["removed", "pool"], d.removed.map((m) => [m.unit, m.pool])) : null);
    } }, "diff")]), [2, 3, 4]), diffBox);
};

pages.workloads = async (main) => {
  main.append(h("h1", {}, "Workloads"));
  const list = await api("/v1/workloads");
  const detail = h("pre", { id: "workload-detail", hidden: true });
  main.append(h("div", { class: "panel" }, list.workloads.length ? table(["name", "kind", "generation", "updated"],
    list.workloads.map((w) => h("tr", {}, h("td", {}, h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); detail.hidden = false; detail.textContent = JSON.stringify(w.spec, null, 2); } }, w.name)),
      h("td", {}, w.kind), h("td", { class: "num" }, w.generation), h("td", {}, when(w.updated_ms)))), [2])
    : h("p", { class: "muted" }, "No workloads.")), detail);
  const ta = h("textarea", { id: "apply-yaml", spellcheck: "false", "aria-label": "Workload YAML" });
  ta.value = "training:\n  - name: my-finetune\n    chips: 16\n    accelerators: [H100]\n    images: {cuda: \"registry.example/train:1\"}\n    work_chip_hours: 160\n";
  const msg = h("div", { id: "apply-result", role: "status" });
  main.append(h("div", { class: "operator-only" }, h("h2", {}, "Apply from YAML"), h("div", { class: "panel" }, ta,
    h("div", { class: "controls", style: "margin-top:8px" }, h("button", { class: "primary", id: "apply-button", onclick: async () => {
      msg.className = ""; msg.textContent = "applying…";
      try {
        const r = await api("/v1/workloads", { method: "POST", headers: { "Content-Type": "application/yaml" }, body: ta.value });
        msg.className = "ok";
        msg.textContent = r.applied.map((a) => `${a.name}: ${a.result}`).join(", ") + " — the controller plans it at its next reconcile.";
      } catch (e) {
        msg.className = "error";
        msg.textContent = e.body && e.body.error ? e.body.error : e.message;
      }
    } }, "Apply")), msg)));
  main.append(h("p", { class: "muted viewer-note" }, state.role === "viewer" ? "Viewers see workloads read-only." : ""));
};

pages.actions = async (main) => {
  main.append(h("h1", {}, "Actions and events"));
  const filter = h("input", { type: "text", id: "actions-filter", placeholder: "filter: kind, unit, pool or reason" });
  const regions = (await api("/v1/fleet")).providers.flatMap((p) => p.regions.map((r) => `${p.name}:${r.name}`));
  const outageMsg = h("span", { id: "outage-result" });
  const regionSel = h("select", { id: "outage-region" }, regions.map((r) => h("option", { value: r }, r)));
  main.append(h("div", { class: "controls" }, h("label", { for: "actions-filter" }, "Filter"), filter,
    h("span", { class: "operator-only controls" }, h("label", { for: "outage-region" }, "Simulated provider:"), regionSel,
      h("button", { id: "outage-button", onclick: async () => {
        try { await api("/v1/sim/outage", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ region: regionSel.value, down: true }) });
          outageMsg.textContent = `${regionSel.value} is down`; outageMsg.className = "ok"; } catch (e) { outageMsg.textContent = e.message; outageMsg.className = "error"; }
      } }, "Take region down"),
      h("button", { onclick: async () => {
        try { await api("/v1/sim/outage", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ region: regionSel.value, down: false }) });
          outageMsg.textContent = `${regionSel.value} is back`; outageMsg.className = "ok"; } catch (e) { outageMsg.textContent = e.message; outageMsg.className = "error"; }
      } }, "Bring back"), outageMsg)));
  const summary = h("div", { class: "cards", id: "actions-summary" });
  const box = h("div", { class: "panel", id: "actions-log" });
  main.append(summary, box, h("p", { class: "muted small" }, "Refreshed every 2 s."));
  let all = [];
  const render = () => {
    const f = filter.value.toLowerCase();
    const shown = all.filter((a) => !f || `${a.kind} ${a.unit} ${a.pool} ${a.reason}`.toLowerCase().includes(f));
    const count = (k) => all.filter((a) => a.kind === k).length;
    summary.replaceChildren(card("launches", count("launch")), card("moves", count("migrate")), card("losses (outages, preemptions)", count("lost")), card("stops", count("stop")));
    box.replaceChildren(table(["#", "when", "kind", "unit", "pool", "reason"], shown.slice().reverse().slice(0, 500).map((a) =>
      h("tr", { "data-kind": a.kind }, h("td", { class: "num" }, a.id), h("td", {}, when(a.at_ms)), h("td", {}, h("span", { class: `kind ${a.kind}` }, a.kind)),
        h("td", {}, a.unit), h("td", {}, a.pool), h("td", { class: "small" }, a.reason))), [0]));
  };
  // Only what is new since the last poll, a page at a time (the log only grows).
  const PAGE = 5000;
  let last = 0;
  const poll = async () => {
    for (;;) {
      const got = (await api(`/v1/actions?since=${last}&limit=${PAGE}`)).actions;
      all.push(...got);
      if (got.length) last = got[got.length - 1].id;
      if (got.length < PAGE) break;
    }
    render();
  };
  filter.addEventListener("input", render);
  await poll();
  state.timers.push(setInterval(() => poll().catch(() => {}), 2000));
};

pages.money = async (main) => {
  main.append(h("h1", {}, "Money, power and carbon"));
  const m = await api("/v1/ledger/summary");
  const r = m.projection;
  main.append(h("div", { class: "cards" },
    card("live bill so far (billed)", usd(m.live.billed_usd)), card("live bill (effective)", usd(m.live.effective_usd)),
    card(`current plan over ${m.projection_hours} h (effective)`, usd(r.effective_usd)), card("below list", `${((1 - r.effective_usd / Math.max(r.list_usd, 1e-9)) * 100).toFixed(1)} %`),
    card("power now (plan, full load)", `${mw(m.power_mw)} MW`), card("emissions", `${num(m.tco2e_per_day, 1)} tCO2e/day`)));
  const hist = m.history;
  const provs = [...new Set(hist.flatMap((x) => Object.keys(x.by_provider)))].sort();
  const cats = [...new Set(hist.flatMap((x) => Object.keys(x.by_category)))].sort();
  main.append(h("div", { class: "two" },
    h("div", { class: "panel" }, lineChart({ title: "Planned spend by provider, over plan history", xLabel: "time (UTC)", yLabel: "$/h", xTime: true, yFmt: (v) => num(v, 0),
      series: provs.map((p) => ({ name: p, points: hist.map((x) => [x.at_ms, x.by_provider[p] || 0]) })) })),
    h("div", { class: "panel" }, lineChart({ title: "Planned spend by pricing category, over plan history", xLabel: "time (UTC)", yLabel: "$/h (at list; committed at marginal cost)", xTime: true, yFmt: (v) => num(v, 0),
      series: cats.map((c) => ({ name: c, points: hist.map((x) => [x.at_ms, x.by_category[c] || 0]) })) }))));
  const spend = r.spend;
  const burn = spend.length ? lineChart({ title: `Commitment burn-down: ${spend[0].id}`, xLabel: "years from the commitment's start", yLabel: "cumulative, $M",
    yFmt: (v) => num(v, 0), reference: { value: spend[0].total_usd / 1e6, name: `total $${num(spend[0].total_usd / 1e6)}M` },
    series: [
      { name: "draw (actual, then forecast at the run-rate)", points: spend[0].curve.map(([t, v]) => [(t - spend[0].start) / (365.25 * 86400), v / 1e6]) },
      { name: "cumulative yearly minimums", points: [[0, 0]].concat(spend[0].years.map((y, i) => [(y.end - spend[0].start) / (365.25 * 86400), spend[0].years.slice(0, i + 1).reduce((s, z) => s + z.minimum_usd, 0) / 1e6])) },
    ] }) : h("p", { class: "muted" }, "No spend commitment.");
  main.append(h("div", { class: "two" }, h("div", { class: "panel", id: "burn-down" }, burn),
    h("div", { class: "panel" }, barChart({ title: "Power by region against its cap (current plan, full load)", unit: "MW", items: m.power.map((x) => ({ label: x.region, value: x.mw, cap: x.cap_mw })), fmt: mw }))));
  if (spend.length) main.append(h("h2", {}, "Spend commitments (forecast at the current plan's run-rate)"), h("div", { class: "panel" }, table(["commitment", "year", "minimum", "projected draw", "true-up"],
    spend.flatMap((s) => s.years.map((y) => [s.id, y.year, usd(y.minimum_usd), usd(y.projected_usd), usd(y.shortfall_usd)])), [1, 2, 3, 4])));
  main.append(h("h2", {}, "Reserved capacity"), h("div", { class: "panel" }, table(["commitment", "pool", "utilisation", "coverage", "fees", "unused", "projected unused at term end"],
    r.usage.map((u) => [u.id, u.pool, `${(u.utilisation * 100).toFixed(1)} %`, `${(u.coverage * 100).toFixed(1)} %`, usd(u.fee_usd), usd(u.unused_usd), usd(u.projected_unused_usd)]), [2, 3, 4, 5, 6])));
  main.append(h("p", { class: "muted small" }, `Live bill: FOCUS rows of what the driver ran since the service started (${m.live.rows} rows; GET /v1/ledger/focus.csv). Projection: the current plan held for ${m.projection_hours} h under the commitments. Emissions are location-based at each region's yearly average.`));
};

pages.inference = async (main) => {
  main.append(h("h1", {}, "Inference"));
  const m = await api("/v1/inference");
  if (!m.configured) {
    main.append(h("p", { class: "muted" }, "No gateway is configured: start the service with --gateway-metrics http://GATEWAY/metrics to see request rates, latency, errors and SLO attainment here."));
  }
  if (m.error) main.append(h("p", { class: "error" }, m.error));
  const services = m.services || [];
  if (services.length) {
    main.append(h("div", { class: "panel" }, table(["service (model)", "requests", "req/s", "errors", "TTFT p50 / p99 ms", "latency p50 / p99 ms", "SLO", "within SLO"],
      services.map((s) => [s.model, num(s.requests), num(s.rate_per_s, 2), num(s.errors), `${num(s.ttft_p50_ms)} / ${num(s.ttft_p99_ms)}`,
        `${num(s.latency_p50_ms)} / ${num(s.latency_p99_ms)}`, s.slo_ms ? `${num(s.slo_ms)} ms TTFT` : "—", s.slo_attainment === null ? "—" : `${(s.slo_attainment * 100).toFixed(1)} %`]), [1, 2, 3])));
    main.append(h("h2", {}, "By region"), h("div", { class: "panel" }, table(["service", "provider", "region", "requests", "errors"],
      services.flatMap((s) => s.regions.map((r) => [s.model, r.provider, r.region, num(r.requests), num(r.errors)])), [3, 4])));
  }
  const plan = await api("/v1/plan").catch(() => null);
  if (plan) {
    const inf = plan.plan.placements.filter((x) => x.rtt_ms !== undefined && x.rtt_ms !== null);
    main.append(h("h2", {}, "Planned replicas"), h("div", { class: "panel" }, table(["unit (service@users)", "pool", "replicas", "RTT ms", "$/h"],
      inf.map((x) => [x.unit, x.pool, x.replicas, num(x.rtt_ms), usd(x.cost_per_hour)]), [2, 3, 4])));
  }
};

pages.simulations = async (main) => {
  main.append(h("h1", {}, "Simulation reports"));
  const list = await api("/v1/sim/reports");
  if (!list.configured) {
    main.append(h("p", { class: "muted" }, "No report directory: start the service with --reports DIR, where DIR holds the output directories of `stratus sim run`."));
    return;
  }
  const view = h("div", { id: "report-view" });
  main.append(h("div", { class: "panel" }, list.reports.length ? table(["report", "scenario", "policies", ""], list.reports.map((r) => [r.name, r.scenario, r.policies.join(", "),
    h("button", { onclick: async () => {
      const md = await api(`/v1/sim/reports/${encodeURIComponent(r.name)}/report.md`);
      view.replaceChildren(h("h2", {}, r.name), h("div", { class: "two" }, r.plots.map((f) => h("div", { class: "panel" }, h("img", { alt: f, "data-plot": f, style: "width:100%" })))),
        h("pre", {}, typeof md === "string" ? md : JSON.stringify(md, null, 2)));
      for (const img of view.querySelectorAll("img")) {
        const blob = await fetch(`/v1/sim/reports/${encodeURIComponent(r.name)}/${img.dataset.plot}`, { headers: { Authorization: `Bearer ${state.token}` } }).then((x) => x.blob());
        img.src = URL.createObjectURL(blob);
      }
    } }, "open")])) : h("p", { class: "muted" }, "No reports in the directory yet.")), view);
};

// ---- Router -----------------------------------------------------------------------------
// Each route() is numbered: a page still loading when the hash changes again must not
// write into #main, which the newer page owns (its lookups of removed elements fail).
let routes = 0;
async function route() {
  const seq = ++routes;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (!state.token) { signOut(""); return; }
  const name = (location.hash || "#fleet").slice(1).split("/")[0];
  const page = pages[name] || pages.fleet;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === name);
  const main = $("#main");
  main.replaceChildren();
  main.dataset.page = name;
  main.dataset.ready = "false";
  const t0 = performance.now();
  try {
    await page(main);
  } catch (e) {
    if (seq === routes && e.status !== 401) main.append(h("p", { class: "error" }, `Could not load: ${e.message}`));
  }
  if (seq !== routes) return;
  state.loadMs[name] = performance.now() - t0;
  main.dataset.loadMs = state.loadMs[name].toFixed(1);
  main.dataset.ready = "true";
}

window.addEventListener("hashchange", route);
if (state.token) signIn(state.token); else signOut("");
