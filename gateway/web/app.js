// MP3 Converter web page: sign up, log in, upload videos (with audio options), watch the
// conversions, download the audio files.
// Plain JavaScript, no dependencies; served as /assets/app.js under a strict Content-Security-Policy
// (no inline scripts or styles), so all behaviour lives here and all styling in style.css.
'use strict';

(function () {
  const POLL_INTERVAL_MS = 2000;
  const REVOKE_DELAY_MS = 10000;
  const TOKEN_KEY = 'mp3converter.token';
  const EMAIL_KEY = 'mp3converter.email';
  const EXPIRES_KEY = 'mp3converter.expires_at';

  const STATUS_TEXT = {
    queued: 'Queued',
    converting: 'Converting',
    done: 'Ready',
    failed: 'Failed',
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    message: $('message'),
    session: $('session'),
    whoami: $('whoami'),
    logoutButton: $('logout-button'),
    authSection: $('auth-section'),
    appSection: $('app-section'),
    loginForm: $('login-form'),
    loginEmail: $('login-email'),
    loginPassword: $('login-password'),
    loginButton: $('login-button'),
    signupForm: $('signup-form'),
    signupEmail: $('signup-email'),
    signupPassword: $('signup-password'),
    signupButton: $('signup-button'),
    uploadHeading: $('upload-heading'),
    dropZone: $('drop-zone'),
    fileInput: $('file-input'),
    uploadList: $('upload-list'),
    resumeOffer: $('resume-offer'),
    resumeList: $('resume-list'),
    jobsHeading: $('jobs-heading'),
    jobsUpdated: $('jobs-updated'),
    jobsEmpty: $('jobs-empty'),
    jobs: $('jobs'),
    optionPreset: $('option-preset'),
    optionFormat: $('option-format'),
    optionStart: $('option-start'),
    optionEnd: $('option-end'),
    optionTitle: $('option-title'),
    optionArtist: $('option-artist'),
    optionNormalize: $('option-normalize'),
    optionCover: $('option-cover'),
    presetDescription: $('preset-description'),
    webhookForm: $('webhook-form'),
    webhookUrl: $('webhook-url'),
    webhookSucceeded: $('webhook-event-succeeded'),
    webhookFailed: $('webhook-event-failed'),
    webhookDescription: $('webhook-description'),
    webhookAdd: $('webhook-add'),
    webhookSecret: $('webhook-secret'),
    webhookSecretUrl: $('webhook-secret-url'),
    webhookSecretValue: $('webhook-secret-value'),
    webhooksEmpty: $('webhooks-empty'),
    webhooks: $('webhooks'),
  };

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  /** Thrown for any non-2xx API answer; carries the server's message. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function formatBytes(bytes) {
    if (!Number.isFinite(bytes) || bytes < 0) return '?';
    if (bytes < 1024) return `${bytes} B`;
    const units = ['KB', 'MB', 'GB', 'TB'];
    let value = bytes / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
  }

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  function formatDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso || '') : dateFormat.format(date);
  }

  function clampPercent(value) {
    const number = Number(value);
    if (!Number.isFinite(number)) return 0;
    return Math.max(0, Math.min(100, Math.round(number)));
  }

  /** UTF-8 safe base64 (btoa only takes Latin-1). */
  function base64Utf8(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = '';
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  /** Pulls the server's `{"error":{"message"}}` out of a response body, with a fallback. */
  function errorFromBody(status, text) {
    let code = 'http_' + status;
    let message = '';
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || '';
      }
    } catch (_) {
      // Not JSON (a proxy's error page, say): fall through to the generic message.
    }
    if (!message) {
      message = status === 0
        ? 'Could not reach the server. Check your connection and try again.'
        : `The server answered with an error (HTTP ${status}).`;
    }
    return new ApiError(status, code, message);
  }

  /** A file name safe to offer to the browser's download (no path separators or controls). */
  function safeFileName(name) {
    // eslint-disable-next-line no-control-regex
    const cleaned = String(name || '').replace(/[\u0000-\u001f\u007f/\\]/g, '_').trim();
    return cleaned || 'audio.mp3';
  }

  /** The audio file's name: the video's, with the job's format as its extension. */
  function audioNameFor(originalName, format) {
    const base = String(originalName || '').split(/[/\\]/).pop() || '';
    const dot = base.lastIndexOf('.');
    const stem = dot > 0 ? base.slice(0, dot) : base;
    return safeFileName(`${stem || 'audio'}.${format || 'mp3'}`);
  }

  /** The audio options chosen on the page, as the upload's query string. */
  function chosenOptions() {
    const query = new URLSearchParams();
    const text = (name, input) => {
      const value = input.value.trim();
      if (value) query.set(name, value);
    };
    text('preset', el.optionPreset);
    text('format', el.optionFormat);
    text('start', el.optionStart);
    text('end', el.optionEnd);
    text('title', el.optionTitle);
    text('artist', el.optionArtist);
    if (el.optionNormalize.checked) query.set('normalize', 'true');
    if (!el.optionCover.checked) query.set('cover', 'none');
    return query.toString();
  }

  /** Fills the preset list from the server, which knows them (`GET /presets`). */
  async function loadPresets() {
    try {
      const listed = await apiJson('GET', '/presets', { auth: false });
      for (const preset of listed.presets || []) {
        const option = document.createElement('option');
        option.value = preset.name;
        option.textContent = preset.name;
        option.dataset.description = preset.description || '';
        el.optionPreset.append(option);
      }
    } catch (error) {
      // The page works without presets; the options below still apply.
    }
    el.optionPreset.addEventListener('change', () => {
      const chosen = el.optionPreset.selectedOptions[0];
      el.presetDescription.textContent = (chosen && chosen.dataset.description) || '';
    });
  }

  /** The file name from a Content-Disposition header: `filename*` (RFC 5987) first, then `filename`. */
  function filenameFromDisposition(header) {
    if (!header) return null;
    const extended = /filename\*\s*=\s*([^;]+)/i.exec(header);
    if (extended) {
      let value = extended[1].trim().replace(/^"(.*)"$/, '$1');
      const parts = /^([\w!#$%&+^`{}~-]*)'[^']*'(.*)$/.exec(value);
      if (parts) value = parts[2];
      try {
        const decoded = decodeURIComponent(value);
        if (decoded) return decoded;
      } catch (_) {
        // Malformed percent-encoding: try the plain filename instead.
      }
    }
    const quoted = /filename\s*=\s*"((?:\\.|[^"\\])*)"/i.exec(header);
    if (quoted) return quoted[1].replace(/\\(.)/g, '$1');
    const token = /filename\s*=\s*([^;\s]+)/i.exec(header);
    return token ? token[1] : null;
  }

  // ---------------------------------------------------------------------------------------------
  // Messages (the aria-live region)

  let messageTimer = 0;
  function showMessage(text, kind) {
    clearTimeout(messageTimer);
    // Empty the region first so assistive technology announces a repeated message again.
    el.message.textContent = '';
    el.message.className = 'message';
    messageTimer = setTimeout(() => {
      el.message.textContent = text;
      el.message.className = `message ${kind || 'info'}`;
    }, 50);
  }
  const showError = (text) => showMessage(text, 'error');
  const showSuccess = (text) => showMessage(text, 'success');
  const showInfo = (text) => showMessage(text, 'info');
  function clearMessage() {
    clearTimeout(messageTimer);
    el.message.textContent = '';
    el.message.className = 'message';
  }

  // ---------------------------------------------------------------------------------------------
  // Session

  function getToken() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return null;
    const expiresAt = Number(sessionStorage.getItem(EXPIRES_KEY) || 0);
    if (expiresAt && Date.now() >= expiresAt) return null;
    return token;
  }

  function storeSession(token, email, expiresIn) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(EMAIL_KEY, email);
    const seconds = Number(expiresIn);
    if (Number.isFinite(seconds) && seconds > 0) {
      sessionStorage.setItem(EXPIRES_KEY, String(Date.now() + seconds * 1000));
    } else {
      sessionStorage.removeItem(EXPIRES_KEY);
    }
  }

  function clearSession() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EMAIL_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
  }

  // Bumped on every log in / log out, so answers to requests of an earlier session are ignored.
  let sessionGeneration = 0;

  function showLoggedIn() {
    el.whoami.textContent = sessionStorage.getItem(EMAIL_KEY) || '';
    el.session.hidden = false;
    el.authSection.hidden = true;
    el.appSection.hidden = false;
    startPolling();
    refreshWebhooks();
    showResumeOffer();
  }

  function showLoggedOut() {
    sessionGeneration += 1;
    stopPolling();
    cancelUploads();
    clearSession();
    resetJobs();
    el.session.hidden = true;
    el.appSection.hidden = true;
    el.authSection.hidden = false;
    el.loginPassword.value = '';
  }

  function logOut() {
    showLoggedOut();
    showInfo('You have been logged out.');
    el.loginEmail.focus();
  }

  function sessionExpired() {
    if (el.appSection.hidden) return;
    const email = sessionStorage.getItem(EMAIL_KEY) || '';
    showLoggedOut();
    if (email) el.loginEmail.value = email;
    showError('Your session has expired. Please log in again.');
    (email ? el.loginPassword : el.loginEmail).focus();
  }

  // ---------------------------------------------------------------------------------------------
  // API calls (fetch; uploads use XMLHttpRequest for progress events)

  /**
   * Calls the API. `credentials: 'omit'`: authentication is by header only, and omitting cookies
   * also stops the browser from popping its own password dialog on a 401 with
   * `WWW-Authenticate: Basic`.
   */
  async function api(method, path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (!headers.has('Accept')) headers.set('Accept', 'application/json');
    if (options.auth !== false) {
      const token = getToken();
      if (!token) {
        sessionExpired();
        throw new ApiError(401, 'unauthenticated', 'Please log in again.');
      }
      headers.set('Authorization', `Bearer ${token}`);
    }
    let body;
    if (options.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body,
        credentials: 'omit',
        cache: 'no-store',
        signal: options.signal,
      });
    } catch (error) {
      if (error && error.name === 'AbortError') throw error;
      throw errorFromBody(0, '');
    }
    if (response.status === 401 && options.auth !== false) {
      sessionExpired();
    }
    if (!response.ok) {
      throw errorFromBody(response.status, await response.text().catch(() => ''));
    }
    return response;
  }

  async function apiJson(method, path, options) {
    const response = await api(method, path, options);
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  // ---------------------------------------------------------------------------------------------
  // Forms

  function setBusy(button, busy, busyText) {
    if (busy) {
      button.dataset.label = button.textContent;
      button.textContent = busyText;
      button.setAttribute('aria-disabled', 'true');
    } else {
      if (button.dataset.label) button.textContent = button.dataset.label;
      button.removeAttribute('aria-disabled');
    }
  }
  const isBusy = (button) => button.getAttribute('aria-disabled') === 'true';

  /** Checks fields; marks the invalid ones, focuses and reports the first. True when all pass. */
  function fieldsAreValid(fields) {
    let firstError = null;
    for (const { input, check } of fields) {
      const problem = check(input.value);
      if (problem) {
        input.setAttribute('aria-invalid', 'true');
        if (!firstError) {
          firstError = problem;
          input.focus();
        }
      } else {
        input.removeAttribute('aria-invalid');
      }
    }
    if (firstError) showError(firstError);
    return !firstError;
  }

  const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+$/;
  const checkEmail = (value) => {
    if (!value.trim()) return 'Please enter your email address.';
    if (!EMAIL_PATTERN.test(value.trim())) return 'Please enter a valid email address, like name@example.com.';
    return null;
  };

  async function onSignup(event) {
    event.preventDefault();
    if (isBusy(el.signupButton)) return;
    const valid = fieldsAreValid([
      { input: el.signupEmail, check: checkEmail },
      {
        input: el.signupPassword,
        check: (value) => (value.length < 8 ? 'Your password must be at least 8 characters long.' : null),
      },
    ]);
    if (!valid) return;
    const email = el.signupEmail.value.trim();
    const password = el.signupPassword.value;
    setBusy(el.signupButton, true, 'Creating account…');
    try {
      await apiJson('POST', '/register', { auth: false, json: { email, password } });
      el.signupForm.reset();
      el.loginEmail.value = email;
      el.loginPassword.value = '';
      showSuccess(`Account created for ${email}. You can log in now.`);
      el.loginPassword.focus();
    } catch (error) {
      showError(error.message);
      if (error.status === 409) el.signupEmail.setAttribute('aria-invalid', 'true');
    } finally {
      setBusy(el.signupButton, false);
    }
  }

  async function onLogin(event) {
    event.preventDefault();
    if (isBusy(el.loginButton)) return;
    const valid = fieldsAreValid([
      { input: el.loginEmail, check: checkEmail },
      { input: el.loginPassword, check: (value) => (value ? null : 'Please enter your password.') },
    ]);
    if (!valid) return;
    const email = el.loginEmail.value.trim();
    const password = el.loginPassword.value;
    setBusy(el.loginButton, true, 'Logging in…');
    try {
      const body = await apiJson('POST', '/login', {
        auth: false,
        headers: { Authorization: `Basic ${base64Utf8(`${email}:${password}`)}` },
      });
      if (!body || !body.access_token) throw new ApiError(500, 'bad_response', 'The server sent an unexpected answer.');
      sessionGeneration += 1;
      storeSession(body.access_token, email, body.expires_in);
      el.loginForm.reset();
      showLoggedIn();
      showSuccess(`Logged in as ${email}.`);
      el.uploadHeading.focus();
    } catch (error) {
      showError(error.message);
      if (error.status === 401) el.loginPassword.select();
    } finally {
      setBusy(el.loginButton, false);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Upload: a queue of files sent one at a time with tus (resumable), each with a progress bar.
  //
  // Each file is created with `POST /files` and sent in PATCHes of CHUNK_BYTES. A PATCH that
  // fails on the network (or meets a busy or unavailable server) is tried again after a pause,
  // from the offset `HEAD` reports: the server keeps what arrived. The upload's URL is kept in
  // localStorage under the file's name, size, date and options, so after a reload choosing the
  // same file again goes on where it stopped.

  const CHUNK_BYTES = 8 * 1024 * 1024;
  const TUS_VERSION = '1.0.0';
  const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  const RESUMABLE_KEY = 'mp3converter.resumable-uploads';

  const uploadQueue = [];
  let currentUpload = null;

  class UploadStopped extends Error {}

  /** The unfinished uploads kept across reloads: `{key: {url, name, size, offset, email}}`. */
  function resumableUploads() {
    try {
      const kept = JSON.parse(localStorage.getItem(RESUMABLE_KEY) || '{}');
      return kept && typeof kept === 'object' ? kept : {};
    } catch (_) {
      return {};
    }
  }

  function keepResumable(key, entry) {
    const kept = resumableUploads();
    if (entry) kept[key] = entry; else delete kept[key];
    try {
      localStorage.setItem(RESUMABLE_KEY, JSON.stringify(kept));
    } catch (_) {
      // Storage full or off: the upload still works, it just cannot resume after a reload.
    }
    showResumeOffer();
  }

  function resumableKey(file, options) {
    const email = sessionStorage.getItem(EMAIL_KEY) || '';
    return [email, file.name, file.size, file.lastModified, options].join('\n');
  }

  /** Lists the signed-in user's unfinished uploads, offering to resume (or discard) each. */
  function showResumeOffer() {
    const email = sessionStorage.getItem(EMAIL_KEY) || '';
    const entries = Object.entries(resumableUploads()).filter(([, entry]) => entry.email === email);
    const waiting = new Set(uploadQueue.concat(currentUpload ? [currentUpload] : []).map((item) => item.key));
    el.resumeList.replaceChildren();
    for (const [key, entry] of entries) {
      if (waiting.has(key)) continue;
      const li = make('li', 'resume-item');
      const percent = entry.size > 0 ? clampPercent((entry.offset / entry.size) * 100) : 0;
      const text = make('span', 'resume-text');
      text.textContent = `${entry.name}: ${formatBytes(entry.offset)} of ${formatBytes(entry.size)} (${percent}%) sent`;
      const resume = make('button', 'button secondary resume-choose');
      resume.type = 'button';
      resume.textContent = 'Choose it to resume';
      resume.addEventListener('click', () => el.fileInput.click());
      const discard = make('button', 'button link resume-discard');
      discard.type = 'button';
      discard.textContent = 'Discard';
      discard.addEventListener('click', async () => {
        keepResumable(key, null);
        try {
          await tusRequest('DELETE', entry.url);
        } catch (_) {
          // Gone already, or unreachable: the server removes it when it expires anyway.
        }
      });
      li.append(text, resume, discard);
      el.resumeList.append(li);
    }
    el.resumeOffer.hidden = el.resumeList.children.length === 0;
  }

  function enqueueFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const rejected = files.filter((file) => file.type && !/^(video|audio)\//.test(file.type));
    const accepted = files.filter((file) => !rejected.includes(file));
    if (rejected.length) {
      showError(`${rejected.map((file) => file.name).join(', ')}: not a video or audio file.`);
    }
    const options = chosenOptions();
    for (const file of accepted) {
      const item = { file, options, key: resumableKey(file, options), stopped: false, xhr: null };
      item.parts = uploadRow(item);
      uploadQueue.push(item);
    }
    showResumeOffer();
    pumpUploads();
  }

  /** The list entry of one upload: its name, a progress bar, a line of text, Cancel. */
  function uploadRow(item) {
    const li = make('li', 'upload');
    li.dataset.state = 'queued';
    li.dataset.name = item.file.name;
    const line = make('div', 'upload-line');
    const name = make('span', 'upload-name');
    name.textContent = item.file.name;
    const cancel = make('button', 'button link upload-cancel');
    cancel.type = 'button';
    cancel.textContent = 'Cancel';
    cancel.setAttribute('aria-label', `Cancel the upload of ${item.file.name}`);
    cancel.addEventListener('click', () => stopUpload(item, 'cancelled'));
    line.append(name, cancel);
    const progress = document.createElement('progress');
    progress.max = 100;
    progress.value = 0;
    progress.setAttribute('aria-label', `Upload of ${item.file.name}`);
    const text = make('p', 'upload-text');
    text.textContent = 'Waiting';
    li.append(line, progress, text);
    el.uploadList.append(li);
    return { li, progress, text, cancel };
  }

  function setUploadState(item, state, text) {
    item.parts.li.dataset.state = state;
    if (text !== undefined) item.parts.text.textContent = text;
    item.parts.cancel.hidden = !['queued', 'uploading', 'retrying'].includes(state);
  }

  function setUploadProgress(item, sent) {
    const total = item.file.size;
    const percent = total > 0 ? clampPercent((sent / total) * 100) : 0;
    item.parts.progress.value = percent;
    setUploadState(item, 'uploading', `${formatBytes(sent)} of ${formatBytes(total)} (${percent}%)`);
  }

  function stopUpload(item, state) {
    item.stopped = true;
    const index = uploadQueue.indexOf(item);
    if (index >= 0) uploadQueue.splice(index, 1);
    if (item.xhr) item.xhr.abort();
    if (state === 'cancelled') {
      setUploadState(item, 'cancelled', 'Cancelled');
      const kept = resumableUploads()[item.key];
      keepResumable(item.key, null);
      if (kept) tusRequest('DELETE', kept.url).catch(() => {});
    }
  }

  /** One tus request by XHR (for upload progress); resolves with the XHR whatever its status. */
  function tusRequest(method, url, { headers = {}, body = null, item = null, onProgress = null } = {}) {
    return new Promise((resolve, reject) => {
      const token = getToken();
      if (!token) {
        reject(new ApiError(401, 'unauthenticated', 'Please log in again.'));
        return;
      }
      const xhr = new XMLHttpRequest();
      if (item) item.xhr = xhr;
      xhr.open(method, url);
      xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.setRequestHeader('Tus-Resumable', TUS_VERSION);
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      if (onProgress) xhr.upload.addEventListener('progress', (event) => onProgress(event.loaded));
      xhr.addEventListener('load', () => resolve(xhr));
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'The connection dropped.')));
      xhr.addEventListener('abort', () => reject(new UploadStopped('stopped')));
      xhr.send(body);
    });
  }

  /** An upload failure that a pause may cure: the network, a busy or briefly down server. */
  function isPassing(status) {
    return status === 0 || status === 409 || status === 423 || status >= 500;
  }

  /** Where the upload at `url` stands: `{offset}`, `{jobId}` once done, or `null` if gone. */
  async function tusStatus(url, item) {
    const xhr = await tusRequest('HEAD', url, { item });
    if (xhr.status === 404 || xhr.status === 410) return null;
    if (xhr.status === 401) throw new ApiError(401, 'unauthenticated', 'Please log in again.');
    if (xhr.status !== 200) throw new ApiError(xhr.status, 'http_' + xhr.status, `The server answered HTTP ${xhr.status}.`);
    const jobId = xhr.getResponseHeader('Job-Id');
    return jobId ? { jobId } : { offset: Number(xhr.getResponseHeader('Upload-Offset') || 0) };
  }

  /**
   * `tusStatus`, asked again after failures a pause may cure, `failures` of them already had:
   * a PATCH cut off a moment ago (by this page's reload, say) may still be putting its bytes
   * away, which the server answers 423 until it knows the offset.
   */
  async function tusStatusPatiently(url, item, failures) {
    for (;;) {
      if (item.stopped) throw new UploadStopped('stopped');
      try {
        return { place: await tusStatus(url, item), failures };
      } catch (error) {
        if (!(error instanceof ApiError) || !isPassing(error.status) || failures >= RETRY_DELAYS_MS.length) throw error;
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[failures]));
        failures += 1;
      }
    }
  }

  /** `POST /files`: the new upload's URL (relative ones resolve against the page). */
  async function tusCreate(item) {
    const pairs = [['filename', item.file.name]];
    if (item.file.type) pairs.push(['filetype', item.file.type]);
    for (const [name, value] of new URLSearchParams(item.options)) pairs.push([name, value]);
    const metadata = pairs.map(([name, value]) => `${name} ${base64Utf8(value)}`).join(',');
    const xhr = await tusRequest('POST', '/files/', {
      item,
      headers: { 'Upload-Length': String(item.file.size), 'Upload-Metadata': metadata },
    });
    if (xhr.status !== 201) throw errorFromBody(xhr.status, xhr.responseText);
    return new URL(xhr.getResponseHeader('Location'), window.location.href).href;
  }

  /** Sends the file to the end, resuming after every failure a pause may cure; the job's id. */
  async function tusUpload(item) {
    const file = item.file;
    let kept = resumableUploads()[item.key];
    let place = kept ? (await tusStatusPatiently(kept.url, item, 0)).place : null;
    if (kept && !place) keepResumable(item.key, null);
    let url = place ? kept.url : null;
    if (place && place.jobId) return place.jobId;
    if (!url) {
      url = await tusCreate(item);
      place = { offset: 0 };
    }
    let offset = place.offset;
    keepResumable(item.key, { url, name: file.name, size: file.size, offset, email: sessionStorage.getItem(EMAIL_KEY) || '' });
    let failures = 0;
    for (;;) {
      if (item.stopped) throw new UploadStopped('stopped');
      setUploadProgress(item, offset);
      let status;
      let xhr = null;
      try {
        const end = Math.min(offset + CHUNK_BYTES, file.size);
        xhr = await tusRequest('PATCH', url, {
          item,
          headers: { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' },
          body: file.slice(offset, end),
          onProgress: (loaded) => setUploadProgress(item, offset + loaded),
        });
        status = xhr.status;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 0) throw error;
        status = 0;
      }
      if (status === 204) {
        const jobId = xhr.getResponseHeader('Job-Id');
        if (jobId) return jobId;
        offset = Number(xhr.getResponseHeader('Upload-Offset') || offset);
        failures = 0;
        keepResumable(item.key, { ...resumableUploads()[item.key], offset });
        continue;
      }
      if (status === 401) throw new ApiError(401, 'unauthenticated', 'Please log in again.');
      if (!isPassing(status)) {
        keepResumable(item.key, null);
        throw errorFromBody(status, xhr ? xhr.responseText : '');
      }
      if (failures >= RETRY_DELAYS_MS.length) {
        throw new ApiError(status, 'interrupted', 'the upload keeps failing; choose the file again later to resume it.');
      }
      const delay = RETRY_DELAYS_MS[failures];
      failures += 1;
      setUploadState(item, 'retrying', `Connection lost at ${formatBytes(offset)}; trying again in ${Math.ceil(delay / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, delay));
      // What the server kept is where the next PATCH starts.
      ({ place, failures } = await tusStatusPatiently(url, item, failures));
      if (!place) {
        keepResumable(item.key, null);
        throw new ApiError(410, 'gone', 'the upload expired on the server; choose the file again to start over.');
      }
      if (place.jobId) return place.jobId;
      offset = place.offset;
    }
  }

  async function pumpUploads() {
    if (currentUpload || !uploadQueue.length) return;
    const item = uploadQueue.shift();
    if (!getToken()) {
      uploadQueue.length = 0;
      sessionExpired();
      return;
    }
    const generation = sessionGeneration;
    currentUpload = item;
    setUploadState(item, 'uploading', 'Starting');
    try {
      const jobId = await tusUpload(item);
      if (generation !== sessionGeneration) return;
      keepResumable(item.key, null);
      item.parts.progress.value = 100;
      item.parts.li.dataset.jobId = jobId;
      setUploadState(item, 'done', `Uploaded ${formatBytes(item.file.size)} (100%); the conversion is queued`);
      showSuccess(`${item.file.name} uploaded. The conversion has been queued.`);
      refreshJobs();
    } catch (error) {
      if (generation !== sessionGeneration) return;
      if (error instanceof UploadStopped) {
        if (item.parts.li.dataset.state !== 'cancelled') setUploadState(item, 'cancelled', 'Cancelled');
      } else if (error instanceof ApiError && error.status === 401) {
        sessionExpired();
      } else {
        setUploadState(item, 'failed', `Failed: ${error.message}`);
        showError(`${item.file.name}: ${error.message}`);
      }
    } finally {
      if (currentUpload === item) currentUpload = null;
      item.xhr = null;
      if (generation === sessionGeneration) {
        showResumeOffer();
        pumpUploads();
      }
    }
  }

  function cancelUploads() {
    const items = uploadQueue.splice(0).concat(currentUpload ? [currentUpload] : []);
    for (const item of items) stopUpload(item, 'stopped');
    currentUpload = null;
    el.uploadList.replaceChildren();
  }

  function setUpDropZone() {
    let depth = 0;
    const hasFiles = (event) => Array.from(event.dataTransfer ? event.dataTransfer.types : []).includes('Files');
    el.dropZone.addEventListener('dragenter', (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      el.dropZone.classList.add('dragover');
    });
    el.dropZone.addEventListener('dragover', (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
    });
    el.dropZone.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) el.dropZone.classList.remove('dragover');
    });
    el.dropZone.addEventListener('drop', (event) => {
      event.preventDefault();
      depth = 0;
      el.dropZone.classList.remove('dragover');
      enqueueFiles(event.dataTransfer && event.dataTransfer.files);
    });
    // A file dropped next to the zone would make the browser navigate away to it: don't.
    window.addEventListener('dragover', (event) => {
      if (hasFiles(event)) event.preventDefault();
    });
    window.addEventListener('drop', (event) => {
      if (!el.dropZone.contains(event.target)) event.preventDefault();
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Jobs: polled every 2 s while logged in; rows are updated in place so focus is not lost

  let pollTimer = 0;
  let pollController = null;
  let pollFailing = false;
  const rows = new Map(); // job id -> { li, parts, job }

  function startPolling() {
    stopPolling();
    refreshJobs();
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = 0;
    if (pollController) pollController.abort();
    pollController = null;
  }

  async function refreshJobs() {
    clearTimeout(pollTimer);
    if (pollController) pollController.abort();
    const controller = new AbortController();
    pollController = controller;
    const generation = sessionGeneration;
    try {
      const body = await apiJson('GET', '/jobs', { signal: controller.signal });
      if (generation !== sessionGeneration) return;
      renderJobs((body && body.jobs) || []);
      el.jobsUpdated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (pollFailing) {
        pollFailing = false;
        showInfo('Connection restored.');
      }
    } catch (error) {
      if (generation !== sessionGeneration || (error && error.name === 'AbortError')) return;
      if (error.status === 401) return; // sessionExpired() already took over
      if (!pollFailing) {
        pollFailing = true;
        showError(`Could not refresh your conversions: ${error.message} Retrying…`);
      }
    } finally {
      if (pollController === controller) pollController = null;
    }
    if (generation === sessionGeneration && !el.appSection.hidden) {
      pollTimer = setTimeout(refreshJobs, POLL_INTERVAL_MS);
    }
  }

  function resetJobs() {
    rows.clear();
    el.jobs.replaceChildren();
    el.jobsEmpty.hidden = false;
    el.jobsUpdated.textContent = '';
  }

  /** A new `tag` element with the class names `className`. */
  function make(tag, className) {
    const element = document.createElement(tag);
    element.className = className;
    return element;
  }

  function createRow(job) {
    const li = make('li', 'job');
    li.dataset.jobId = job.id;

    const head = make('div', 'job-head');
    const name = make('span', 'job-name');
    const badge = make('span', 'badge');
    head.append(name, badge);

    const meta = make('p', 'job-meta');
    const time = document.createElement('time');
    meta.append('Uploaded ', time);

    const progressLine = make('div', 'job-progress');
    const progress = document.createElement('progress');
    progress.max = 100;
    const percent = make('span', 'job-percent');
    progressLine.append(progress, percent);

    const error = make('p', 'job-error');

    const actions = make('div', 'job-actions');
    // A button of the row acts on the row's job, and shows itself busy while it does.
    const rowButton = (className, label, act) => {
      const button = make('button', className);
      button.type = 'button';
      button.textContent = label;
      button.addEventListener('click', () => act(li.dataset.jobId, button));
      return button;
    };
    const download = rowButton('button download', 'Download', downloadJob);
    const remove = rowButton('button secondary delete', 'Delete', deleteJob);
    actions.append(download, remove);

    const main = make('div', 'job-main');
    main.append(head, meta, progressLine, error);
    li.append(main, actions);
    return { li, parts: { name, badge, time, progressLine, progress, percent, error, download, remove }, job: null };
  }

  function updateRow(row, job) {
    const { li, parts } = row;
    const previous = row.job;
    row.job = job;
    const status = STATUS_TEXT[job.status] ? job.status : 'queued';
    const percent = status === 'done' ? 100 : clampPercent(job.progress_percent);
    const fileName = job.original_filename || 'Untitled video';

    li.dataset.status = job.status;
    parts.name.textContent = fileName;
    parts.name.title = fileName;
    parts.badge.textContent = STATUS_TEXT[status];
    parts.badge.className = `badge badge-${status}`;
    parts.time.dateTime = job.created_at || '';
    parts.time.textContent = formatDate(job.created_at);

    const active = status === 'queued' || status === 'converting';
    parts.progressLine.hidden = !active;
    parts.progress.value = percent;
    parts.progress.setAttribute('aria-label', `Conversion progress of ${fileName}`);
    parts.percent.textContent = `${percent}%`;

    parts.error.hidden = status !== 'failed';
    parts.error.textContent = status === 'failed' ? `Conversion failed: ${job.error || 'unknown reason'}` : '';

    parts.download.hidden = !(status === 'done' && job.download_url);
    const format = job.options && job.options.format;
    parts.download.setAttribute('aria-label', `Download ${audioNameFor(fileName, format)}`);
    parts.remove.setAttribute('aria-label', `Delete ${fileName}`);

    // Announce a conversion that finished while the user was watching.
    if (previous && previous.status !== job.status) {
      if (status === 'done') showSuccess(`${fileName} is ready to download.`);
      else if (status === 'failed') showError(`${fileName} could not be converted: ${job.error || 'unknown reason'}`);
    }
  }

  function renderJobs(jobs) {
    const sorted = jobs
      .filter((job) => job && job.id)
      .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    const seen = new Set();
    sorted.forEach((job, index) => {
      seen.add(job.id);
      let row = rows.get(job.id);
      if (!row) {
        row = createRow(job);
        rows.set(job.id, row);
      }
      updateRow(row, job);
      // Keep DOM order equal to the sorted order, moving only rows that are out of place.
      const expected = el.jobs.children[index];
      if (expected !== row.li) el.jobs.insertBefore(row.li, expected || null);
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.li.remove();
        rows.delete(id);
      }
    }
    el.jobsEmpty.hidden = rows.size > 0;
  }

  async function downloadJob(jobId, button) {
    const row = rows.get(jobId);
    if (!row || !row.job || !row.job.download_url || isBusy(button)) return;
    const job = row.job;
    setBusy(button, true, 'Downloading…');
    try {
      const response = await api('GET', job.download_url, { headers: { Accept: 'audio/*' } });
      const blob = await response.blob();
      const format = job.options && job.options.format;
      const name = safeFileName(
        filenameFromDisposition(response.headers.get('Content-Disposition')) ||
          audioNameFor(job.original_filename, format),
      );
      const url = URL.createObjectURL(blob);
      const link = document.createElement('a');
      link.href = url;
      link.download = name;
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), REVOKE_DELAY_MS);
      showSuccess(`Downloading ${name} (${formatBytes(blob.size)}).`);
    } catch (error) {
      if (error.status !== 401) showError(`Download failed: ${error.message}`);
    } finally {
      setBusy(button, false);
    }
  }

  async function deleteJob(jobId, button) {
    const row = rows.get(jobId);
    if (!row || isBusy(button)) return;
    const fileName = (row.job && row.job.original_filename) || 'the conversion';
    setBusy(button, true, 'Deleting…');
    try {
      await api('DELETE', `/jobs/${encodeURIComponent(jobId)}`);
      // Move focus somewhere sensible before the row (holding the focused button) disappears.
      const next = row.li.nextElementSibling || row.li.previousElementSibling;
      row.li.remove();
      rows.delete(jobId);
      el.jobsEmpty.hidden = rows.size > 0;
      const target = next && next.querySelector('button.delete');
      (target || el.jobsHeading).focus();
      showSuccess(`Deleted ${fileName}.`);
    } catch (error) {
      if (error.status !== 401) showError(`Could not delete ${fileName}: ${error.message}`);
    } finally {
      setBusy(button, false);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Webhooks: the caller's endpoints, each with its state, its last deliveries and its actions.

  function webhookEvents(endpoint) {
    const events = endpoint.events || [];
    if (events.length === 0) return 'finished and failed conversions';
    return events
      .map((event) => (event === 'job.succeeded' ? 'finished conversions' : 'failed conversions'))
      .join(', ');
  }

  async function refreshWebhooks() {
    const generation = sessionGeneration;
    try {
      const body = await apiJson('GET', '/webhooks');
      if (generation !== sessionGeneration) return;
      renderWebhooks((body && body.endpoints) || []);
    } catch (error) {
      if (error.status !== 401) showError(`Could not load your webhooks: ${error.message}`);
    }
  }

  function renderWebhooks(endpoints) {
    el.webhooks.replaceChildren(...endpoints.map(webhookRow));
    el.webhooksEmpty.hidden = endpoints.length > 0;
  }

  function button(text, className, onClick) {
    const element = document.createElement('button');
    element.type = 'button';
    element.className = className;
    element.textContent = text;
    element.addEventListener('click', () => onClick(element));
    return element;
  }

  function webhookRow(endpoint) {
    const li = document.createElement('li');
    li.className = 'webhook';
    li.dataset.id = endpoint.id;
    const url = document.createElement('p');
    url.className = 'webhook-url';
    url.textContent = endpoint.url;
    const about = document.createElement('p');
    about.className = 'hint';
    about.textContent = `Sends ${webhookEvents(endpoint)}${endpoint.description ? ` · ${endpoint.description}` : ''}`;
    const state = document.createElement('p');
    state.className = endpoint.disabled ? 'webhook-state disabled' : 'webhook-state';
    state.textContent = endpoint.disabled
      ? `Disabled: ${endpoint.disabled.reason}`
      : endpoint.failing_since
        ? `Failing since ${new Date(endpoint.failing_since).toLocaleString()}`
        : 'Active';
    const actions = document.createElement('div');
    actions.className = 'webhook-actions';
    actions.append(button('Send test', 'button secondary webhook-test', (b) => testWebhook(endpoint, b)));
    if (endpoint.disabled) {
      actions.append(button('Enable', 'button secondary webhook-enable', (b) => enableWebhook(endpoint, b)));
    }
    actions.append(button('New secret', 'button secondary webhook-rotate', (b) => rotateWebhook(endpoint, b)));
    actions.append(button('Delete', 'button link webhook-delete', (b) => deleteWebhook(endpoint, b)));
    const deliveries = document.createElement('details');
    deliveries.className = 'webhook-deliveries';
    const summary = document.createElement('summary');
    summary.textContent = 'Recent deliveries';
    const list = document.createElement('ol');
    deliveries.append(summary, list);
    deliveries.addEventListener('toggle', () => {
      if (deliveries.open) loadDeliveries(endpoint, list);
    });
    li.append(url, about, state, actions, deliveries);
    return li;
  }

  async function loadDeliveries(endpoint, list) {
    try {
      const body = await apiJson('GET', `/webhooks/${encodeURIComponent(endpoint.id)}/deliveries`);
      const attempts = (body && body.deliveries) || [];
      if (attempts.length === 0) {
        const empty = document.createElement('li');
        empty.textContent = 'None yet.';
        list.replaceChildren(empty);
        return;
      }
      list.replaceChildren(
        ...attempts.map((attempt) => {
          const item = document.createElement('li');
          item.className = attempt.delivered ? 'delivered' : 'failed';
          const result = attempt.delivered
            ? `delivered (${attempt.status_code})`
            : attempt.status_code
              ? `failed (${attempt.status_code})`
              : `failed: ${attempt.error || 'no answer'}`;
          const end = attempt.given_up ? ' · given up' : '';
          item.textContent = `${new Date(attempt.attempted_at).toLocaleString()} · ${attempt.event_type} · ${result}${end}`;
          return item;
        }),
      );
    } catch (error) {
      if (error.status !== 401) showError(`Could not load the deliveries: ${error.message}`);
    }
  }

  function showSecret(url, secret) {
    el.webhookSecretUrl.textContent = url;
    el.webhookSecretValue.textContent = secret;
    el.webhookSecret.hidden = false;
  }

  async function onAddWebhook(event) {
    event.preventDefault();
    if (isBusy(el.webhookAdd)) return;
    const url = el.webhookUrl.value.trim();
    if (!url) {
      el.webhookUrl.setAttribute('aria-invalid', 'true');
      el.webhookUrl.focus();
      showError('Enter the address to send webhooks to.');
      return;
    }
    const events = [];
    if (el.webhookSucceeded.checked) events.push('job.succeeded');
    if (el.webhookFailed.checked) events.push('job.failed');
    if (events.length === 0) {
      showError('Choose at least one kind of conversion to send.');
      return;
    }
    setBusy(el.webhookAdd, true, 'Adding…');
    try {
      const created = await apiJson('POST', '/webhooks', {
        json: { url, events, description: el.webhookDescription.value.trim() },
      });
      showSecret(created.url, created.secret);
      el.webhookForm.reset();
      showSuccess(`Webhook added: ${created.url}`);
      await refreshWebhooks();
    } catch (error) {
      if (error.status !== 401) showError(`Could not add the webhook: ${error.message}`);
    } finally {
      setBusy(el.webhookAdd, false);
    }
  }

  /** Runs one action on an endpoint with its button busy, then shows the list again. */
  async function webhookAction(buttonElement, busyText, action) {
    if (isBusy(buttonElement)) return;
    setBusy(buttonElement, true, busyText);
    try {
      await action();
    } catch (error) {
      if (error.status !== 401) showError(error.message);
    } finally {
      setBusy(buttonElement, false);
    }
    await refreshWebhooks();
  }

  const webhookPath = (endpoint, tail = '') => `/webhooks/${encodeURIComponent(endpoint.id)}${tail}`;

  const testWebhook = (endpoint, b) =>
    webhookAction(b, 'Sending…', async () => {
      const queued = await apiJson('POST', webhookPath(endpoint, '/test'));
      showSuccess(`Test message ${queued.message_id} sent to ${endpoint.url}.`);
    });

  const enableWebhook = (endpoint, b) =>
    webhookAction(b, 'Enabling…', async () => {
      await apiJson('POST', webhookPath(endpoint, '/enable'));
      showSuccess(`${endpoint.url} receives webhooks again.`);
    });

  const rotateWebhook = (endpoint, b) =>
    webhookAction(b, 'Making…', async () => {
      const rotated = await apiJson('POST', webhookPath(endpoint, '/rotate-secret'));
      showSecret(endpoint.url, rotated.secret);
      showSuccess('New secret made; the old one signs beside it for 24 hours.');
    });

  const deleteWebhook = (endpoint, b) =>
    webhookAction(b, 'Deleting…', async () => {
      await apiJson('DELETE', webhookPath(endpoint));
      showSuccess(`Webhook ${endpoint.url} deleted.`);
    });

  // ---------------------------------------------------------------------------------------------
  // Wiring

  el.signupForm.addEventListener('submit', onSignup);
  el.webhookForm.addEventListener('submit', onAddWebhook);
  el.webhookUrl.addEventListener('input', () => el.webhookUrl.removeAttribute('aria-invalid'));
  el.loginForm.addEventListener('submit', onLogin);
  el.logoutButton.addEventListener('click', logOut);
  el.fileInput.addEventListener('change', () => {
    enqueueFiles(el.fileInput.files);
    el.fileInput.value = ''; // so choosing the same file again still fires `change`
  });
  for (const input of [el.signupEmail, el.signupPassword, el.loginEmail, el.loginPassword]) {
    input.addEventListener('input', () => input.removeAttribute('aria-invalid'));
  }
  setUpDropZone();
  loadPresets();

  if (getToken()) {
    showLoggedIn();
  } else {
    clearSession();
  }
  document.documentElement.classList.add('js');
  clearMessage();
})();
