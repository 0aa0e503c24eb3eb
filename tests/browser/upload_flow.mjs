// Browser test of the gateway's web page: sign up, log in, upload a video (with the page's own
// tus client), wait for the conversion, download the MP3, then again as an Opus file chosen in
// the audio options; upload two files at once while the connection of one is cut mid-upload
// (the page resumes it), reload the page mid-upload and resume by choosing the file again; then add
// a webhook at WEBHOOK_URL (an address nobody answers at, which the system allows), send it a
// test, see the failed delivery listed, and delete it — in a real (headless) Chromium at phone
// width.
//
//   GATEWAY_URL=http://127.0.0.1:34567 VIDEO_PATH=/tmp/v.mp4 BIG_PATH=/tmp/big.mp4 \
//     OUT_DIR=/tmp/out WEBHOOK_URL=http://127.0.0.1:9/hook node tests/browser/upload_flow.mjs
//
// BIG_PATH is a file of a few PATCHes (the page sends 8 MiB at a time) that starts like a video.
//
// Optional: CHROMIUM_PATH (default /usr/bin/chromium). Prints one line per step; on failure
// prints the reason, saves OUT_DIR/failure.png and exits 1. Console errors, uncaught page errors
// and unexpected HTTP errors from the page count as failures.

import { chromium } from 'playwright-core';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

const OVERALL_TIMEOUT_MS = 180_000;
const CONVERSION_TIMEOUT_MS = 120_000;
const VIEWPORT = { width: 360, height: 740 };

const GATEWAY_URL = (process.env.GATEWAY_URL || '').replace(/\/+$/, '');
const VIDEO_PATH = process.env.VIDEO_PATH || '';
const OUT_DIR = process.env.OUT_DIR || '';
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const WEBHOOK_URL = process.env.WEBHOOK_URL || '';
const BIG_PATH = process.env.BIG_PATH || '';

/** Console errors the test provokes itself (a connection it cuts), not the page's problems. */
let toleratedConsole = null;

let browser;
let page;
let stepNumber = 0;
let finished = false;
const pageProblems = [];

function step(text) {
  stepNumber += 1;
  console.log(`[${String(stepNumber).padStart(2, '0')}] ${text}`);
}

function ok(text) {
  console.log(`     ok: ${text}`);
}

class TestFailure extends Error {}

function check(condition, reason) {
  if (!condition) throw new TestFailure(reason);
}

/** Polls `probe` until it returns a truthy value, or fails with `reason` after `timeoutMs`. */
async function waitFor(probe, timeoutMs, reason, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new TestFailure(`${reason} (waited ${timeoutMs / 1000} s)`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function checkPageProblems(when) {
  check(pageProblems.length === 0, `page reported errors ${when}:\n  - ${pageProblems.join('\n  - ')}`);
}

async function fail(reason) {
  if (finished) return;
  finished = true;
  console.error(`FAIL: ${reason}`);
  if (pageProblems.length && !reason.startsWith('page reported errors')) console.error(`page problems:\n  - ${pageProblems.join('\n  - ')}`);
  if (page) {
    try {
      const message = await page.locator('#message').textContent({ timeout: 2000 });
      if (message) console.error(`page message: ${message.trim()}`);
    } catch {
      // The page may be gone; nothing more to report.
    }
    if (OUT_DIR) {
      try {
        const file = path.join(OUT_DIR, 'failure.png');
        await page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
        console.error(`screenshot: ${file}`);
      } catch (error) {
        console.error(`could not take a screenshot: ${error.message}`);
      }
    }
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

async function noHorizontalScroll(when) {
  const { scrollWidth, innerWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
  check(scrollWidth <= innerWidth, `horizontal scrolling ${when}: scrollWidth ${scrollWidth} > innerWidth ${innerWidth}`);
  ok(`no horizontal scroll ${when} (scrollWidth ${scrollWidth} <= ${innerWidth})`);
}

/** Every visible-or-not form control must have an accessible name from a label or ARIA. */
async function everyInputLabelled(when) {
  const unlabelled = await page.evaluate(() => {
    const missing = [];
    for (const input of document.querySelectorAll('input, select, textarea')) {
      if (input.type === 'hidden') continue;
      const fromLabels = Array.from(input.labels || []).map((label) => label.textContent.trim()).join(' ');
      const fromAria = (input.getAttribute('aria-label') || '').trim();
      const fromLabelledBy = (input.getAttribute('aria-labelledby') || '')
        .split(/\s+/)
        .filter(Boolean)
        .map((id) => (document.getElementById(id) || { textContent: '' }).textContent.trim())
        .join(' ');
      if (!(fromLabels || fromAria || fromLabelledBy)) missing.push(input.id || input.name || input.outerHTML);
    }
    return missing;
  });
  check(unlabelled.length === 0, `form controls without a label ${when}: ${unlabelled.join(', ')}`);
}

/** `page.getByLabel(label)` inside `scope` must find exactly the element with `id`. */
async function labelPointsTo(scope, label, id) {
  const locator = page.locator(scope).getByLabel(label, { exact: true });
  const count = await locator.count();
  check(count === 1, `getByLabel(${JSON.stringify(label)}) in ${scope} found ${count} elements, expected 1 (#${id})`);
  const foundId = await locator.getAttribute('id');
  check(foundId === id, `getByLabel(${JSON.stringify(label)}) in ${scope} found #${foundId}, expected #${id}`);
}

async function messageText() {
  return ((await page.locator('#message').textContent()) || '').trim();
}

/** Waits until the upload row `row` is done; the job it became. */
async function uploadDone(row, what) {
  await waitFor(
    async () => {
      const state = await row.getAttribute('data-state');
      if (state === 'failed') throw new TestFailure(`${what} failed: ${await row.locator('.upload-text').textContent()}`);
      return state === 'done';
    },
    60_000,
    `${what} never finished`,
  );
  const jobId = await row.getAttribute('data-job-id');
  check(jobId, `${what} names no job`);
  return jobId;
}

async function main() {
  check(GATEWAY_URL, 'GATEWAY_URL is not set');
  check(VIDEO_PATH, 'VIDEO_PATH is not set');
  check(OUT_DIR, 'OUT_DIR is not set');
  await mkdir(OUT_DIR, { recursive: true });
  const video = await stat(VIDEO_PATH).catch(() => null);
  check(video && video.isFile(), `VIDEO_PATH ${VIDEO_PATH} is not a file`);

  step(`launch Chromium (${CHROMIUM_PATH})`);
  browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  ok(`Chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: VIEWPORT, acceptDownloads: true });
  context.setDefaultTimeout(15_000);
  // Report CSP violations explicitly (they also show up as console errors).
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || 'inline'} (${event.sourceFile || ''}:${event.lineNumber || 0})`);
    });
  });
  page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') {
      if (toleratedConsole && toleratedConsole.test(message.text())) return;
      const location = message.location();
      const where = location && location.url ? ` (${location.url}:${location.lineNumber})` : '';
      const text = `console error: ${message.text()}${where}`;
      console.error(`     ! ${text}`);
      pageProblems.push(text);
    }
  });
  page.on('pageerror', (error) => {
    const text = `uncaught exception: ${error.message}`;
    console.error(`     ! ${text}`);
    pageProblems.push(text);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) {
      const request = response.request();
      const text = `HTTP ${response.status()} for ${request.method()} ${response.url()}`;
      console.error(`     ! ${text}`);
      pageProblems.push(text);
    }
  });

  step(`open ${GATEWAY_URL}/ at ${VIEWPORT.width}x${VIEWPORT.height}`);
  const response = await page.goto(`${GATEWAY_URL}/`, { waitUntil: 'load' });
  check(response && response.ok(), `GET / answered ${response && response.status()}`);
  const contentType = response.headers()['content-type'] || '';
  check(contentType.startsWith('text/html'), `GET / has Content-Type ${JSON.stringify(contentType)}, expected text/html`);
  const csp = response.headers()['content-security-policy'] || '';
  check(/default-src 'self'/.test(csp), `GET / has no Content-Security-Policy with default-src 'self' (got ${JSON.stringify(csp)})`);
  check((await page.getAttribute('html', 'lang')) === 'en', '<html> has no lang="en"');
  check((await page.title()).trim().length > 0, 'the page has no <title>');
  check((await page.locator('meta[name="viewport"]').count()) === 1, 'the page has no <meta name="viewport">');
  await page.locator('#signup-email').waitFor({ state: 'visible' });
  ok(`title ${JSON.stringify(await page.title())}, CSP present`);
  await noHorizontalScroll('on the login page');
  checkPageProblems('while loading');

  step('every form input has an accessible label');
  await everyInputLabelled('on the login page');
  await labelPointsTo('#signup-form', 'Email', 'signup-email');
  await labelPointsTo('#signup-form', 'Password', 'signup-password');
  await labelPointsTo('#login-form', 'Email', 'login-email');
  await labelPointsTo('#login-form', 'Password', 'login-password');
  check((await page.locator('#message').getAttribute('aria-live')) !== null, '#message has no aria-live');
  ok('sign-up and log-in fields labelled, #message is aria-live');

  const email = `browser-${randomBytes(6).toString('hex')}@example.com`;
  const password = `pw-${randomBytes(9).toString('base64url')}`;

  // Fills the form `form` (`signup` or `login`), presses its button, and answers the POST it sent.
  const submitCredentials = async (form, path, address, secret) => {
    await page.fill(`#${form}-email`, address);
    await page.fill(`#${form}-password`, secret);
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(path) && r.request().method() === 'POST'),
      page.click(`#${form}-button`),
    ]);
    return response;
  };

  step('a too-short password is refused with a message in #message');
  await page.fill('#signup-email', email);
  await page.fill('#signup-password', 'short');
  await page.click('#signup-button');
  await waitFor(async () => /8 characters/i.test(await messageText()), 5_000, 'no error message about the password length');
  check((await page.getAttribute('#signup-password', 'aria-invalid')) === 'true', 'the short password is not marked aria-invalid');
  ok(JSON.stringify(await messageText()));

  step(`sign up as ${email}`);
  const register = await submitCredentials('signup', '/register', email, password);
  check(register.status() === 201, `POST /register answered ${register.status()}: ${await register.text().catch(() => '')}`);
  await waitFor(async () => /created/i.test(await messageText()), 5_000, 'no confirmation message after sign-up');
  ok(JSON.stringify(await messageText()));

  step('log in');
  const login = await submitCredentials('login', '/login', email, password);
  check(login.status() === 200, `POST /login answered ${login.status()}: ${await login.text().catch(() => '')}`);
  await page.locator('#file-input').waitFor({ state: 'attached' });
  await page.locator('#logout-button').waitFor({ state: 'visible' });
  const stored = await page.evaluate(() => Object.keys(sessionStorage).some((key) => /token/i.test(key)));
  check(stored, 'no token in sessionStorage after logging in');
  ok('logged in, token in sessionStorage');
  await noHorizontalScroll('after logging in');
  await everyInputLabelled('after logging in');
  await labelPointsTo('body', 'Choose videos', 'file-input');

  step('the file input can be reached with the keyboard (Tab)');
  await page.evaluate(() => {
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
  });
  let reached = false;
  for (let i = 0; i < 15 && !reached; i += 1) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement && document.activeElement.id === 'file-input');
  }
  check(reached, 'pressing Tab never focused #file-input');
  const ring = await page.evaluate(() => {
    const input = document.getElementById('file-input');
    const label = input.labels && input.labels[0];
    const style = getComputedStyle(label || input);
    return { style: style.outlineStyle, width: style.outlineWidth };
  });
  check(ring.style !== 'none' && ring.width !== '0px', `the focused file input shows no focus outline (${JSON.stringify(ring)})`);
  ok(`#file-input focused by Tab, focus outline ${ring.style} ${ring.width}`);

  step(`upload ${VIDEO_PATH} (${video.size} bytes) with tus`);
  const uploadRows = page.locator('#upload-list li.upload');
  await page.setInputFiles('#file-input', VIDEO_PATH);
  const jobId = await uploadDone(uploadRows.last(), 'the first upload');
  const firstProgress = await uploadRows.last().locator('progress').evaluate((bar) => bar.value);
  check(firstProgress === 100, `the upload's progress bar shows ${firstProgress}, not 100`);
  const progressText = ((await uploadRows.last().locator('.upload-text').textContent()) || '').trim();
  check(/100%/.test(progressText), `the upload's progress text does not say 100%: ${JSON.stringify(progressText)}`);
  ok(`job ${jobId}; progress ${JSON.stringify(progressText)}`);

  step('the job appears in #jobs');
  const row = page.locator(`#jobs [data-job-id="${jobId}"]`);
  await row.waitFor({ state: 'visible', timeout: 10_000 });
  ok(`status ${await row.getAttribute('data-status')}`);
  await noHorizontalScroll('with a job listed');

  step(`wait (up to ${CONVERSION_TIMEOUT_MS / 1000} s) for the conversion to finish`);
  let lastStatus = '';
  const started = Date.now();
  await waitFor(
    async () => {
      const status = await row.getAttribute('data-status');
      if (status !== lastStatus) {
        const percent = ((await row.locator('.job-percent').textContent().catch(() => '')) || '').trim();
        console.log(`     status ${status}${percent && status !== 'done' ? ` (${percent})` : ''} after ${((Date.now() - started) / 1000).toFixed(1)} s`);
        lastStatus = status;
      }
      if (status === 'failed') {
        const reason = ((await row.locator('.job-error').textContent().catch(() => '')) || '').trim();
        throw new TestFailure(`the job's status is "failed"; the page says: ${reason || '(no reason shown)'}`);
      }
      return status === 'done';
    },
    CONVERSION_TIMEOUT_MS,
    `the job never reached "done" (last status ${JSON.stringify(lastStatus)})`,
    250,
  );
  ok(`done after ${((Date.now() - started) / 1000).toFixed(1)} s`);

  step('download the MP3');
  const button = row.locator('button.download');
  await button.waitFor({ state: 'visible' });
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 30_000 }), button.click()]);
  const target = path.join(OUT_DIR, 'downloaded.mp3');
  await download.saveAs(target);
  const failure = await download.failure();
  check(!failure, `the download failed: ${failure}`);
  const bytes = await readFile(target);
  ok(`saved ${target} (${bytes.length} bytes, suggested name ${JSON.stringify(download.suggestedFilename())})`);
  check(download.suggestedFilename().toLowerCase().endsWith('.mp3'), `the download is called ${download.suggestedFilename()}, not *.mp3`);

  step('the download is an MP3');
  check(bytes.length > 1024, `the MP3 is only ${bytes.length} bytes`);
  const id3 = bytes.subarray(0, 3).toString('latin1') === 'ID3';
  const frameSync = bytes[0] === 0xff && (bytes[1] & 0xe0) === 0xe0;
  check(id3 || frameSync, `the file does not start like an MP3: ${bytes.subarray(0, 4).toString('hex')}`);
  ok(id3 ? 'starts with an ID3 tag' : 'starts with an MPEG frame sync');

  step('upload again as an Opus file with the "voice" preset and a title, from the audio options');
  await page.locator('#audio-options summary').click();
  await waitFor(
    () => page.evaluate(() => document.querySelectorAll('#option-preset option[value="voice"]').length === 1),
    10_000,
    'the preset list was never filled from GET /presets',
  );
  await page.selectOption('#option-preset', 'voice');
  const description = ((await page.locator('#preset-description').textContent()) || '').trim();
  check(/Opus/.test(description), `the chosen preset is not described: ${JSON.stringify(description)}`);
  await page.fill('#option-title', 'A talk');
  await page.setInputFiles('#file-input', VIDEO_PATH);
  const voiceJob = await uploadDone(uploadRows.last(), 'the Opus upload');
  const voice = await page.evaluate(async (id) => {
    const token = sessionStorage.getItem('mp3converter.token');
    const answer = await fetch(`/jobs/${id}`, { headers: { Authorization: `Bearer ${token}` } });
    return { job_id: id, ...(await answer.json()) };
  }, voiceJob);
  check(voice.options && voice.options.format === 'opus' && voice.options.preset === 'voice', `the job's options are ${JSON.stringify(voice.options)}`);
  check(voice.options.tags && voice.options.tags.title === 'A talk', `the title was not sent: ${JSON.stringify(voice.options)}`);
  check(voice.upload_url && voice.upload_url.startsWith('/files/'), `the job names no upload: ${JSON.stringify(voice.upload_url)}`);
  const voiceRow = page.locator(`#jobs [data-job-id="${voice.job_id}"]`);
  await voiceRow.waitFor({ state: 'visible', timeout: 10_000 });
  await waitFor(
    async () => {
      const status = await voiceRow.getAttribute('data-status');
      if (status === 'failed') throw new TestFailure('the Opus job failed');
      return status === 'done';
    },
    CONVERSION_TIMEOUT_MS,
    'the Opus job never reached "done"',
    250,
  );
  const voiceButton = voiceRow.locator('button.download');
  await voiceButton.waitFor({ state: 'visible' });
  const [voiceDownload] = await Promise.all([page.waitForEvent('download', { timeout: 30_000 }), voiceButton.click()]);
  const voiceTarget = path.join(OUT_DIR, 'downloaded.opus');
  await voiceDownload.saveAs(voiceTarget);
  const voiceBytes = await readFile(voiceTarget);
  check(voiceDownload.suggestedFilename().toLowerCase().endsWith('.opus'), `the download is called ${voiceDownload.suggestedFilename()}, not *.opus`);
  check(voiceBytes.subarray(0, 4).toString('latin1') === 'OggS', 'the download is not an Ogg file');
  ok(`saved ${voiceTarget} (${voiceBytes.length} bytes, ${voiceDownload.suggestedFilename()})`);

  step('two files at once, each with its progress bar; the connection of one is cut mid-upload');
  check(BIG_PATH, 'BIG_PATH is not set');
  const big = await stat(BIG_PATH);
  await page.selectOption('#option-preset', '');
  await page.fill('#option-title', '');
  toleratedConsole = /ERR_CONNECTION_RESET|ERR_FAILED|Failed to load resource/;
  let patches = 0;
  let cut = 0;
  await page.route('**/files/*', (route) => {
    if (route.request().method() === 'PATCH') {
      patches += 1;
      if (patches === 2) {
        cut += 1;
        return route.abort('connectionreset');
      }
    }
    return route.continue();
  });
  const before = await uploadRows.count();
  await page.setInputFiles('#file-input', [BIG_PATH, VIDEO_PATH]);
  await waitFor(async () => (await uploadRows.count()) === before + 2, 5_000, 'two files were not both listed');
  const bigRow = uploadRows.nth(before);
  const smallRow = uploadRows.nth(before + 1);
  check((await smallRow.getAttribute('data-state')) === 'queued', 'the second file does not wait its turn');
  let sawRetrying = false;
  await waitFor(
    async () => {
      const state = await bigRow.getAttribute('data-state');
      if (state === 'retrying') sawRetrying = true;
      if (state === 'failed') throw new TestFailure(`the cut upload failed: ${await bigRow.locator('.upload-text').textContent()}`);
      return state === 'done';
    },
    60_000,
    'the cut upload never finished',
    50,
  );
  await uploadDone(smallRow, 'the second file');
  check(cut === 1 && sawRetrying, `the cut was not seen and retried (cut ${cut}, retrying shown: ${sawRetrying})`);
  await page.unroute('**/files/*');
  ok(`${big.size} bytes in ${patches} PATCHes, one cut and resumed; the second file uploaded after it`);

  step('a reload mid-upload offers to resume; choosing the file again sends only the rest');
  let allowed = 1;
  await page.route('**/files/*', (route) => {
    if (route.request().method() === 'PATCH') {
      if (allowed > 0) {
        allowed -= 1;
        return route.continue();
      }
      return route.abort('connectionreset');
    }
    return route.continue();
  });
  await page.setInputFiles('#file-input', BIG_PATH);
  await waitFor(async () => (await uploadRows.last().getAttribute('data-state')) === 'retrying', 30_000, 'the upload never lost its connection');
  await page.reload({ waitUntil: 'load' });
  await page.unroute('**/files/*');
  const bigName = path.basename(BIG_PATH);
  await page.locator('#resume-offer').waitFor({ state: 'visible', timeout: 10_000 });
  const offer = ((await page.locator('#resume-list').textContent()) || '').trim();
  check(offer.includes(bigName), `the resume offer does not name ${bigName}: ${JSON.stringify(offer)}`);
  const sent = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname.startsWith('/files')) sent.push(`${request.method()} ${request.headers()['upload-offset'] || ''}`.trim());
  });
  await page.setInputFiles('#file-input', BIG_PATH);
  await uploadDone(page.locator('#upload-list li.upload').last(), 'the resumed upload');
  check(!sent.some((line) => line.startsWith('POST')), `a new upload was made instead of resuming: ${sent.join(', ')}`);
  const firstPatch = sent.find((line) => line.startsWith('PATCH'));
  check(firstPatch && Number(firstPatch.split(' ')[1]) > 0, `the resumed upload started from 0: ${sent.join(', ')}`);
  check(await page.locator('#resume-offer').isHidden(), 'the resume offer is still shown');
  toleratedConsole = null;
  ok(`resumed: ${sent.join(', ')}`);

  step('add a webhook; its secret is shown once');
  check(WEBHOOK_URL, 'WEBHOOK_URL is not set');
  await page.fill('#webhook-url', WEBHOOK_URL);
  await page.uncheck('#webhook-event-failed');
  await page.fill('#webhook-description', 'the browser test');
  const [added] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/webhooks') && r.request().method() === 'POST', { timeout: 10_000 }),
    page.click('#webhook-add'),
  ]);
  check(added.status() === 201, `POST /webhooks answered ${added.status()}: ${await added.text().catch(() => '')}`);
  const secret = ((await page.locator('#webhook-secret-value').textContent()) || '').trim();
  check(secret.startsWith('whsec_'), `the page does not show the secret: ${JSON.stringify(secret)}`);
  const hook = page.locator('#webhooks li.webhook');
  await hook.first().waitFor({ state: 'visible', timeout: 10_000 });
  check((await hook.count()) === 1, 'one webhook is listed');
  const hookText = (await hook.textContent()) || '';
  check(hookText.includes(WEBHOOK_URL) && hookText.includes('finished conversions') && !hookText.includes('failed conversions'), `the webhook row says ${JSON.stringify(hookText)}`);
  ok(`listed: ${WEBHOOK_URL}`);

  step('send it a test; the failed delivery shows in its recent deliveries');
  await hook.locator('button.webhook-test').click();
  await waitFor(
    async () => {
      const deliveries = page.locator('#webhooks li.webhook details.webhook-deliveries');
      if (await deliveries.evaluate((d) => d.open)) {
        await deliveries.locator('summary').click(); // close, so opening again reloads the list
      }
      await deliveries.locator('summary').click();
      await page.waitForTimeout(300);
      const text = (await deliveries.locator('ol').textContent()) || '';
      return text.includes('ping') && text.includes('failed');
    },
    30_000,
    'the test delivery never showed in the list',
    500,
  );
  ok('ping listed as failed (nobody answers at that address)');

  step('delete the webhook');
  await page.locator('#webhooks li.webhook button.webhook-delete').click();
  await waitFor(async () => (await page.locator('#webhooks li.webhook').count()) === 0, 10_000, 'the webhook was never removed from the list');
  check(await page.locator('#webhooks-empty').isVisible(), 'the empty-list text is not shown');
  ok('gone');

  step('no console errors, page errors or failed requests');
  await page.waitForTimeout(500);
  checkPageProblems('during the test');
  ok('none');

  finished = true;
  await browser.close();
  console.log('PASS');
}

const overall = setTimeout(() => {
  fail(`overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s exceeded`);
}, OVERALL_TIMEOUT_MS);

main()
  .then(() => {
    clearTimeout(overall);
    process.exit(0);
  })
  .catch((error) => fail(error instanceof TestFailure ? error.message : error.stack || String(error)));
