// Open a report in headless Chromium and print what a reader would see, as one JSON line.
//
//   NODE_PATH=.cache/browser/node_modules node check_page.cjs PAGE.html SHOT.png [WIDTH]
//
// Prints {"title", "h1", "tables", "images": [{"alt", "complete", "width", "height"}],
// "overflow": {"page", "viewport", "widest_table"}, "errors": [...], "browser"}; the Python test
// (tests/e2e/test_report_browser.py) judges it. Exit 3 when the browser cannot start, so the test
// can skip with the reason instead of failing.
"use strict";

const path = require("path");
const { pathToFileURL } = require("url");

async function main() {
  const [page_path, shot, width] = process.argv.slice(2);
  let chromium, puppeteer;
  try {
    chromium = require("@sparticuz/chromium");
    puppeteer = require("puppeteer-core");
  } catch (e) {
    console.error(`browser tool not installed: ${e.message}`);
    process.exit(3);
  }
  let browser;
  try {
    // the binary ships brotli-compressed inside the npm package; executablePath() unpacks it once
    browser = await puppeteer.launch({ args: chromium.args, executablePath: await chromium.executablePath(),
                                       headless: "shell" });
  } catch (e) {
    console.error(`headless Chromium did not start: ${e.message}`);
    process.exit(3);
  }
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url().slice(0, 80)}`));
    await page.setViewport({ width: Number(width || 1280), height: 900 });
    await page.goto(pathToFileURL(path.resolve(page_path)).href, { waitUntil: "load" });
    const seen = await page.evaluate(() => {
      const imgs = [...document.images].map((i) => ({ alt: i.alt, complete: i.complete,
                                                      width: i.naturalWidth, height: i.naturalHeight }));
      const tables = [...document.querySelectorAll("table")];
      return {
        title: document.title,
        h1: (document.querySelector("h1") || {}).textContent || "",
        text_length: document.body.innerText.length,
        tables: tables.length,
        images: imgs,
        overflow: { page: document.documentElement.scrollWidth, viewport: window.innerWidth,
                    widest_table: Math.max(0, ...tables.map((t) => t.getBoundingClientRect().width)) },
      };
    });
    await page.screenshot({ path: shot, fullPage: true });
    seen.errors = errors;
    seen.browser = await browser.version();
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
