// The dashboard end to end in headless Chromium (Debian's `chromium`, driven by
// playwright-core). Run by crates/server/tests/browser.rs, which starts the service and
// passes: BASE (http://127.0.0.1:PORT), OPERATOR and VIEWER tokens, CHROMIUM (the browser),
// PLAYWRIGHT (the playwright-core package directory), OUT (where screenshots go).
// Every request to anything but BASE is refused and fails the run: the page must work
// offline. Prints one JSON line with per-page load times.
import { createRequire } from "node:module";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE"), OPERATOR = env("OPERATOR"), VIEWER = env("VIEWER"), OUT = env("OUT");
const require = createRequire(import.meta.url);
const { chromium } = require(env("PLAYWRIGHT"));
mkdirSync(OUT, { recursive: true });

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "stratus-chromium-")), {
  executablePath: env("CHROMIUM"),
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const outside = [];
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(BASE) || url.startsWith("blob:") || url.startsWith("data:")) return route.continue();
  outside.push(url);
  return route.abort();
});
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
// The refused sign-in, the invalid document and the viewer's apply are answered 401, 400
// and 403 on purpose; any other console error fails the run.
let expected = 0;
page.on("console", (m) => {
  if (m.type() !== "error") return;
  if (expected > 0 && /status of (400|401|403)/.test(m.text())) { expected--; return; }
  errors.push(m.text());
});

const check = (cond, what) => { if (!cond) throw new Error(`check failed: ${what}`); };
const loads = {};
async function open(name) {
  await page.evaluate((n) => { location.hash = n; }, name);
  await page.waitForFunction((n) => {
    const m = document.querySelector("#main");
    return m && m.dataset.page === n && m.dataset.ready === "true";
  }, name, { timeout: 20000 });
  loads[name] = Number(await page.$eval("#main", (m) => m.dataset.loadMs));
  // A page that failed to load (or a data source that answered with an error) says so in a
  // `p.error` at the top level of #main.
  const failed = await page.$$eval("#main > p.error", (ps) => ps.map((p) => p.textContent));
  check(failed.length === 0, `page ${name} loaded without errors: ${failed.join(" | ")}`);
}
async function shot(name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: false });
}
const apiAs = (token, path, opts = {}) => page.evaluate(async ([t, p, o]) => {
  const r = await fetch(p, Object.assign({}, o, { headers: Object.assign({ Authorization: `Bearer ${t}` }, o.headers || {}) }));
  return { status: r.status, body: await r.text() };
}, [token, path, opts]);

// Sign in.
const t0 = Date.now();
await page.goto(BASE + "/");
await page.waitForSelector("#signin:not([hidden])");
await shot("signin");
expected++;
await page.fill("#token", "not-a-token");
await page.click("#signin-form button");
await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0);
await page.fill("#token", OPERATOR);
await page.click("#signin-form button");
await page.waitForFunction(() => document.querySelector("#main").dataset.ready === "true" && document.querySelector("#signin").hidden);
loads.first_page_ms_wall = Date.now() - t0;
loads.fleet = Number(await page.$eval("#main", (m) => m.dataset.loadMs));

// Fleet: every region on the map.
const fleet = JSON.parse((await apiAs(OPERATOR, "/v1/fleet")).body);
const regions = fleet.providers.flatMap((p) => p.regions.map((r) => `${p.name}:${r.name}`));
const onMap = await page.$$eval("circle.region", (cs) => cs.map((c) => c.dataset.region));
check(onMap.length === regions.length && regions.every((r) => onMap.includes(r)), `all ${regions.length} regions on the map (saw ${onMap.length})`);
await page.selectOption("#f-colour", "carbon");
await shot("fleet");
await page.selectOption("#f-colour", "price");

// Workloads: a bad document is refused inline; a good one is applied.
await open("workloads");
await page.fill("#apply-yaml", "training:\n  - name: e2e-bad\n    chips: 8\n    accelerators: [H900]\n    images: {cuda: img}\n    work_chip_hours: 10\n");
expected++;
await page.click("#apply-button");
await page.waitForSelector("#apply-result.error");
const bad = await page.textContent("#apply-result");
check(/H900|accelerator/.test(bad), `inline validation error names the field: ${bad}`);
await shot("workloads-error");
await page.fill("#apply-yaml", "training:\n  - name: e2e-train\n    chips: 16\n    accelerators: [H100]\n    images: {cuda: \"registry.example/train:1\"}\n    work_chip_hours: 100000\n    checkpoint_minutes: 10\n");
await page.click("#apply-button");
await page.waitForSelector("#apply-result.ok");
await open("workloads");
await shot("workloads");

// Plan: the workload is placed.
let placed = null;
for (let i = 0; i < 60 && !placed; i++) {
  await open("plan");
  placed = await page.$('tr[data-unit="e2e-train"]');
  if (!placed) await page.waitForTimeout(500);
}
check(placed, "e2e-train appears on the plan page");
await shot("plan");
const plan = JSON.parse((await apiAs(OPERATOR, "/v1/plan")).body).plan;
const where = plan.placements.find((x) => x.unit === "e2e-train");

// Actions: take its region down in the simulated provider and see it moved.
await open("actions");
await page.waitForFunction(() => [...document.querySelectorAll('#actions-log tr[data-kind="launch"]')].some((r) => r.textContent.includes("e2e-train")), null, { timeout: 30000 });
await page.selectOption("#outage-region", where.region);
await page.click("#outage-button");
await page.waitForFunction((pool) => {
  const rows = [...document.querySelectorAll("#actions-log tr")];
  const lost = rows.some((r) => r.dataset.kind === "lost" && r.textContent.includes("e2e-train"));
  const again = rows.some((r) => r.dataset.kind === "launch" && r.textContent.includes("e2e-train") && !r.textContent.includes(pool));
  return lost && again;
}, where.pool, { timeout: 60000 });
await page.fill("#actions-filter", "e2e-train");
await shot("actions");

// The other pages load and are captured.
for (const name of ["money", "inference", "simulations"]) {
  await open(name);
  await shot(name);
  if (name === "inference") {
    // The 60 chats the test sent through the gateway, per service, from its metrics.
    const chat = await page.$$eval("#main table tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))
      .find((c) => c[0] === "chat"));
    check(chat && chat[1] === "60", `the inference page counts the gateway's 60 chat requests: ${chat}`);
  }
}
// A report opens with its plots, fetched through the report-file endpoint.
await page.click("text=open");
await page.waitForFunction(() => {
  const imgs = [...document.querySelectorAll("#report-view img")];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}, null, { timeout: 10000 });
await shot("simulation-report");
await open("fleet");

// A viewer sees everything read-only and cannot apply.
await page.click("#signout");
await page.fill("#token", VIEWER);
await page.click("#signin-form button");
await page.waitForFunction(() => document.querySelector("#signin").hidden && document.body.classList.contains("viewer"));
await open("workloads");
check(!(await page.isVisible("#apply-button")), "the apply button is hidden from viewers");
await open("actions");
check(!(await page.isVisible("#outage-button")), "the outage control is hidden from viewers");
expected++;
const refused = await apiAs(VIEWER, "/v1/workloads", { method: "POST", headers: { "Content-Type": "application/yaml" }, body: "batch:\n  - name: x\n    chips: 8\n    accelerators: [H100]\n    images: {cuda: img}\n    work_chip_hours: 8\n" });
check(refused.status === 403, `the API refuses a viewer's apply (got ${refused.status})`);
await open("workloads");
await shot("workloads-viewer");

check(outside.length === 0, `no request left the service: ${outside.join(", ")}`);
check(errors.length === 0, `no errors in the page: ${errors.join(" | ")}`);
await context.close();
console.log(JSON.stringify({ ok: true, regions: regions.length, load_ms: loads, screenshots: OUT }));
