// The trainer's dashboard in a real browser (Debian's chromium, headless, through playwright-core),
// for tests/e2e/dashboard_browser.sh. Every request that does not go to loopback is blocked and
// recorded (the page must work offline). Checks that each chart has data, saves screenshots,
// tries a rollback with a wrong token (the server's error is shown, CURRENT unchanged), then
// with the right one, and waits until the page's replica table shows every replica on that
// version. Prints one JSON line {"ok", "version", "failures", ...}; exit 0 only when all held.
//   node dashboard.mjs --url URL --token-file F --replicas N --artifacts DIR [--chromium PATH]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
const url = args.url;
const token = readFileSync(args["token-file"], "utf8").trim();
const replicas = Number(args.replicas || 0);
const artifacts = args.artifacts;
const WAIT_MS = 30000;

const failures = [];
const blocked = [];
const consoleErrors = [];
const result = { ok: false, version: null, failures, blocked, console_errors: consoleErrors };
const check = (cond, what) => {
  if (!cond) failures.push(what);
  console.error(`${cond ? "ok" : "FAIL"}: ${what}`);
  return cond;
};

const isLoopback = (u) => {
  try {
    const { protocol, hostname } = new URL(u);
    if (protocol === "data:" || protocol === "blob:" || u === "about:blank") return true;
    return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
  } catch {
    return false;
  }
};

const browser = await chromium.launch({
  executablePath: args.chromium || "/usr/bin/chromium",
  headless: true,
  // As root (CI), chromium refuses to start with its sandbox; /dev/shm may be small in containers.
  args: [...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []), "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (isLoopback(u)) return route.continue();
    blocked.push(u);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(`page error: ${e.message}`));

  const status = async () => (await (await fetch(`${url}/v1/status`)).json());
  const resp = await page.goto(url, { waitUntil: "load" });
  check(resp && resp.status() === 200, `GET / answers 200 (got ${resp && resp.status()})`);

  // Every chart: data in its first series; and the other series the scenario makes defined.
  const charts = ["chart-quality", "chart-ingest", "chart-lag", "chart-buffer", "chart-scale", "chart-freshness"];
  const mustHave = ["logloss", "accuracy", "ingest_rate", "consumer_lag", "buffer_fill", "buffer_events",
                    "loss_scale", "skipped_steps", "freshness", "version"];
  let counts = {};
  try {
    await page.waitForFunction(
      ({ charts, mustHave }) => {
        const all = {};
        for (const id of charts) {
          const fig = document.getElementById(id);
          if (!fig || !(Number(fig.getAttribute("data-points")) > 0)) return false;
          Object.assign(all, JSON.parse(fig.getAttribute("data-counts") || "{}"));
        }
        return mustHave.every((k) => all[k] > 0);
      },
      { charts, mustHave }, { timeout: WAIT_MS, polling: 250 });
  } catch { /* reported below */ }
  for (const id of charts) {
    const fig = await page.$eval(`#${id}`, (f) => ({ points: Number(f.getAttribute("data-points")),
                                                     counts: JSON.parse(f.getAttribute("data-counts") || "{}"),
                                                     canvases: f.querySelectorAll("canvas").length }));
    Object.assign(counts, fig.counts);
    check(fig.points > 0 && fig.canvases > 0, `chart ${id} has data (${fig.points} points) drawn on a canvas`);
  }
  for (const k of mustHave) check(counts[k] > 0, `series ${k} has data in the page (${counts[k]} points)`);
  result.counts = counts;

  // Versions: at least two promoted, rollback buttons on the promoted non-current ones.
  await page.waitForSelector("#versions tbody tr", { timeout: WAIT_MS }).catch(() => {});
  const before = await status();
  const current = before.current_version;
  const buttons = await page.$$eval("button[data-rollback]", (bs) => bs.map((b) => Number(b.dataset.rollback)));
  check(buttons.length >= 1 && !buttons.includes(current),
        `rollback buttons on promoted non-current versions (${buttons.join(",")}; current ${current})`);
  const header = await page.textContent("#current");
  check(header === `v${current}`, `header shows the current version (${header})`);
  // The gate's verdicts, the promotion markers on the charts and in the event list, per class.
  const gates = await page.$$eval("#versions tbody td.gate", (tds) => tds.map((t) => t.textContent));
  check(gates.length >= 2 && gates.every((g) => g && g !== "\u2014"), `versions show the gate's verdict (${gates.slice(0, 3).join(" | ")})`);
  await page.waitForSelector('#markers li[data-kind="promote"]', { timeout: WAIT_MS }).catch(() => {});
  const kinds = await page.$$eval("#markers li", (ls) => ls.map((l) => l.dataset.kind));
  check(kinds.includes("promote"), `the event list shows promotions (${kinds.join(",")})`);
  const drawn = await page.$eval("#chart-quality", (f) => Number(f.getAttribute("data-markers")));
  check(drawn >= 1, `markers drawn on the charts (${drawn})`);
  const classes = await page.$$eval("#classes tbody tr", (rs) => rs.length);
  check(classes === 10, `per-class accuracy for the 10 classes (${classes} rows)`);
  const hold = await page.textContent("#holdout");
  check(/\d+ events/.test(hold), `header shows the holdout window (${hold})`);
  // Replicas listed, each on CURRENT, before the rollback.
  if (replicas > 0) {
    try {
      await page.waitForFunction(
        ({ n, v }) => {
          const rows = document.querySelectorAll("#replicas tbody tr");
          return rows.length === n && [...rows].every((r) => r.dataset.version === String(v) && r.dataset.stale === "false");
        },
        { n: replicas, v: current }, { timeout: WAIT_MS, polling: 250 });
    } catch { /* reported below */ }
    const rows = await page.$$eval("#replicas tbody tr", (rs) => rs.map((r) => `${r.dataset.replica}=v${r.dataset.version}`));
    check(rows.length === replicas && rows.every((r) => r.endsWith(`=v${current}`)),
          `replica table: ${replicas} replicas on v${current} (${rows.join(", ")})`);
    // The precision each replica serves and why (serve.precision's default, fp32: "config").
    const precs = await page.$$eval("#replicas tbody tr", (rs) => rs.map((r) => `${r.dataset.precision}:${r.querySelector("span.tag[class*=precision-]")?.textContent}`));
    check(precs.length === replicas && precs.every((p) => p === "fp32:config"),
          `replica table: the precision served and why (${precs.join(", ")})`);
  }
  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
  result.screenshot = join(artifacts, "dashboard.png");

  const target = buttons.length ? Math.min(...buttons) : null;
  result.version = target;
  if (target !== null) {
    // A wrong token: the server's message is shown, nothing moves.
    await page.click(`button[data-rollback="${target}"]`);
    await page.waitForSelector("#rollback-dialog[open]", { timeout: 5000 });
    await page.fill("#rollback-token", "not-the-token");
    await page.click("#rollback-confirm");
    await page.waitForSelector("#error:not([hidden])", { timeout: 10000 }).catch(() => {});
    const err = (await page.textContent("#error")) || "";
    const errVisible = await page.isVisible("#error");
    check(errVisible && err.includes("HTTP 401") && err.includes("bearer token"),
          `wrong token: the error element shows the server's answer ("${err}")`);
    const mid = await status();
    check(mid.current_version === current, `wrong token: CURRENT unchanged (v${mid.current_version})`);
    await page.screenshot({ path: join(artifacts, "dashboard-wrong-token.png"), fullPage: true });

    // The right token: CURRENT moves, the replicas follow, the page shows it.
    await page.click(`button[data-rollback="${target}"]`);
    await page.waitForSelector("#rollback-dialog[open]", { timeout: 5000 });
    await page.fill("#rollback-token", token);
    await page.click("#rollback-confirm");
    await page.waitForSelector("#notice:not([hidden])", { timeout: 10000 }).catch(() => {});
    check(await page.isVisible("#notice"), `right token: success notice (${await page.textContent("#notice")})`);
    check(!(await page.isVisible("#error")), "right token: no error shown");
    const after = await status();
    check(after.current_version === target, `right token: CURRENT is v${target} (v${after.current_version})`);
    try {
      await page.waitForFunction((v) => document.getElementById("current").textContent === `v${v}`, target,
                                 { timeout: WAIT_MS, polling: 250 });
    } catch { /* reported below */ }
    check((await page.textContent("#current")) === `v${target}`, "header shows the rolled-back version");
    if (replicas > 0) {
      const t0 = Date.now();
      try {
        await page.waitForFunction(
          ({ n, v }) => {
            const rows = document.querySelectorAll("#replicas tbody tr");
            return rows.length === n && [...rows].every((r) => r.dataset.version === String(v));
          },
          { n: replicas, v: target }, { timeout: WAIT_MS, polling: 250 });
      } catch { /* reported below */ }
      const rows = await page.$$eval("#replicas tbody tr", (rs) => rs.map((r) => `${r.dataset.replica}=v${r.dataset.version}`));
      check(rows.length === replicas && rows.every((r) => r.endsWith(`=v${target}`)),
            `replica table shows every replica on v${target} after ${((Date.now() - t0) / 1000).toFixed(1)} s (${rows.join(", ")})`);
    }
    await page.screenshot({ path: join(artifacts, "dashboard-after-rollback.png"), fullPage: true });
  }
  check(blocked.length === 0, `no request left loopback (${blocked.length} blocked: ${blocked.slice(0, 3).join(" ")})`);
  check(consoleErrors.filter((e) => !e.includes("401")).length === 0,
        `no console errors other than the expected 401 (${consoleErrors.join(" | ")})`);
} catch (e) {
  failures.push(`exception: ${e && e.stack ? e.stack : e}`);
} finally {
  await browser.close();
}
result.ok = failures.length === 0;
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
