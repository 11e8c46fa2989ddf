// The verification page's time to a verdict in headless Chromium: from the
// start of navigation to the verdict shown, for each draw of a running node.
// node clients/bench/page-time.mjs URL DRAW_ID [RUNS]
import { chromium } from "../typescript/node_modules/playwright-core/index.mjs";

const [url, id, runs = "10"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const times = [];
const inScript = [];
for (let n = 0; n < Number(runs); n++) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } }); // cold cache each run
  const page = await context.newPage();
  await page.goto(`${url}/verify/${id}`);
  await page.waitForSelector('#verdict[data-state="ok"]', { timeout: 15000 });
  times.push(await page.evaluate(() => performance.now()));
  inScript.push(Number(await page.evaluate(() => document.body.dataset.verdictMs)));
  await context.close();
}
await browser.close();
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`page: navigation to VERIFIED median ${median(times).toFixed(0)} ms (min ${Math.min(...times).toFixed(0)}, max ${Math.max(...times).toFixed(0)}) over ${runs} cold loads;`
  + ` fetch + verify inside the script median ${median(inScript).toFixed(0)} ms`);
