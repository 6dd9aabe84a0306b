// Renders every card chatwarden builds (written by the card tests into CARDS) with Microsoft's
// `adaptivecards` renderer in headless Chromium, saves a PNG of each into OUT, and fails on any
// parse or validation error or an empty render.
// Usage: CARDS=dir OUT=dir node render-cards.mjs
import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const cardsDir = process.env.CARDS;
const outDir = process.env.OUT;
mkdirSync(outDir, { recursive: true });
const script = require.resolve('adaptivecards/dist/adaptivecards.js');
const css = readFileSync(require.resolve('adaptivecards/dist/adaptivecards.css'), 'utf8');
// Teams renders card text as markdown; markdown-it stands in for its markdown processor.
const markdown = require.resolve('markdown-it/dist/markdown-it.min.js');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 560, height: 900 } });
await page.setContent(`<html><head><style>${css} body{font-family:sans-serif;margin:8px;background:#fff}</style></head><body><div id="card" style="width:520px"></div></body></html>`);
await page.addScriptTag({ path: markdown });
await page.addScriptTag({ path: script });
await page.evaluate(() => {
  const md = window.markdownit({ linkify: false });
  window.AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {
    result.outputHtml = md.render(text);
    result.didProcess = true;
  };
});

let passed = 0;
let failed = 0;
const files = readdirSync(cardsDir).filter((f) => f.endsWith('.json')).sort();
for (const file of files) {
  const card = JSON.parse(readFileSync(join(cardsDir, file), 'utf8'));
  const result = await page.evaluate((json) => {
    const AC = window.AdaptiveCards;
    const adaptive = new AC.AdaptiveCard();
    const context = new AC.SerializationContext();
    adaptive.parse(json, context);
    const problems = [];
    for (let i = 0; i < context.eventCount; i += 1) {
      const event = context.getEventAt(i);
      problems.push(`${event.phase === undefined ? '' : event.phase} ${event.message}`);
    }
    const validation = adaptive.validateProperties();
    for (let i = 0; i < validation.failureCount; i += 1) {
      const failure = validation.getFailureAt(i);
      for (const error of failure.errors) problems.push(`${failure.owner.getJsonTypeName()}: ${error.message}`);
    }
    const element = adaptive.render();
    const host = document.getElementById('card');
    host.replaceChildren();
    if (element) host.appendChild(element);
    const buttons = element ? element.querySelectorAll('button').length : 0;
    // Untrusted text must never become a link.
    const links = element ? element.querySelectorAll('a').length : 0;
    return { problems, rendered: !!element && element.innerText.trim().length > 0, buttons, actions: (json.actions || []).length, links };
  }, card);
  const name = file.replace(/\.json$/, '');
  await page.locator('#card').screenshot({ path: join(outDir, `${name}.png`) });
  const ok = result.problems.length === 0 && result.rendered && result.buttons >= result.actions && result.links === 0;
  if (ok) { passed += 1; console.log(`ok   ${name}`); } else { failed += 1; console.log(`FAIL ${name} ${JSON.stringify(result)}`); }
}
await browser.close();
if (files.length === 0) { failed += 1; console.log('FAIL no cards were written'); }
console.log(`cards: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
