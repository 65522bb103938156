// The upload page: resumable uploads with PATCH at offsets, live progress from the server.
// No dependencies, no build step.

import { formatBytes, formatDuration } from '/static/format.js';

const MIB = 1024 * 1024;
const CHUNK_MIN = 1 * MIB;
const CHUNK_MAX = 64 * MIB;
const CHUNK_FIRST = 4 * MIB;
// Aim for a few seconds per request: a drop costs little and a fast link is not starved.
const TARGET_SECONDS = 3;
const PARALLEL = 3;
const BACKOFF_FIRST = 1000;
const BACKOFF_MAX = 30000;
const ENDPOINT = `${location.origin}/uploads`;
const FINAL = new Set(['complete', 'failed']);
const TOKEN_KEY = 'resumable-token';
const HISTORY_KEY = 'resumable-history';
// Files up to this size are hashed in the browser too, and shown "verified" when the
// server's SHA-256 is the same; larger ones would take a long while in JavaScript.
const VERIFY_MAX = 2 * 1024 * MIB;
// The check stops if the upload goes more than 10 % slower with it than without.
const VERIFY_SLOWDOWN = 0.9;
// The throughput chart: one bar per second, the last minute.
const CHART_SECONDS = 60;
const HISTORY_MAX = 50;

const list = document.getElementById('uploads');
const input = document.getElementById('file');
const drop = document.getElementById('drop');
const template = document.getElementById('row');
const uploads = [];

class Retry extends Error {}
class Stopped extends Error {}

function fingerprint(file) {
  return `resumable::${file.name}::${file.size}::${file.lastModified}::${ENDPOINT}`;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.message || body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/// Runs `request`; a network failure or a 5xx means "try again later".
async function call(request) {
  let response;
  try {
    response = await request();
  } catch (error) {
    if (error instanceof Stopped) throw error;
    throw new Retry('the server cannot be reached');
  }
  if (response.status >= 500) throw new Retry(await errorOf(response));
  return response;
}

class Upload {
  constructor(file) {
    this.file = file;
    this.key = fingerprint(file);
    this.id = null;
    this.offset = 0; // where the next PATCH starts: the server's answer
    this.confirmed = 0; // the most the server has confirmed
    this.sent = 0;
    this.chunk = CHUNK_FIRST;
    this.backoff = BACKOFF_FIRST;
    this.retryTimer = null;
    this.xhr = null;
    this.running = false;
    this.samples = [];
    this.rates = []; // bytes sent in each of the last seconds, oldest first
    this.ticked = 0;
    this.chunkRates = []; // bytes per second of each chunk, for the check's cost
    this.check = file.size <= VERIFY_MAX && typeof Worker !== 'undefined' ? 'waiting' : 'off';
    this.browserDigest = null;
    this.row = template.content.firstElementChild.cloneNode(true);
    this.row.querySelector('.upload-name').textContent = file.name;
    this.row.querySelector('.bar').setAttribute('aria-label', `${file.name}: stored so far`);
    for (const [action, handler] of [
      ['pause', () => this.pause()], ['resume', () => this.resume()], ['cancel', () => this.cancel()],
      ['retry', () => this.retryFailed()], ['remove', () => this.remove()],
      ['copy', () => this.copyLink()],
    ]) {
      const button = this.row.querySelector(`[data-action=${action}]`);
      button.setAttribute('aria-label', `${button.textContent} ${file.name}`);
      button.addEventListener('click', handler);
    }
    list.append(this.row);
    this.setState('queued');
  }

  setState(state, detail = '') {
    this.state = state;
    this.row.dataset.state = state;
    const labels = {
      queued: 'Waiting', uploading: 'Uploading', paused: 'Paused', retrying: 'Reconnecting…',
      complete: 'Complete', failed: 'Failed',
    };
    this.row.querySelector('.upload-state').textContent = detail ? `${labels[state]}: ${detail}` : labels[state];
    this.row.querySelector('[data-action=pause]').hidden = !['uploading', 'retrying', 'queued'].includes(state);
    this.row.querySelector('[data-action=resume]').hidden = state !== 'paused';
    this.row.querySelector('[data-action=cancel]').hidden = FINAL.has(state);
    // A failed row is never a dead end: try again, or take it off the list.
    this.row.querySelector('[data-action=retry]').hidden = state !== 'failed';
    this.row.querySelector('[data-action=remove]').hidden = !FINAL.has(state);
    // The list of this browser's uploads shows each one's state as the server has it now.
    if (this.id && (state === 'paused' || FINAL.has(state))) renderHistory();
    this.render();
  }

  /// A count the server reported; `exact` ones (answers to this page's own requests) may also
  /// move it back, after a server crash trimmed bytes that were never durable.
  confirm(received, exact) {
    this.confirmed = exact ? received : Math.max(this.confirmed, received);
    this.row.dataset.received = String(this.confirmed);
    this.render();
  }

  render() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      const size = this.file.size || 1;
      const sent = Math.max(this.sent, this.confirmed);
      this.row.querySelector('.bar-sent').style.width = `${(100 * sent) / size}%`;
      this.row.querySelector('.bar-confirmed').style.width = `${(100 * this.confirmed) / size}%`;
      const bar = this.row.querySelector('.bar');
      bar.setAttribute('aria-valuenow', String(Math.floor((100 * this.confirmed) / size)));
      bar.setAttribute('aria-valuetext', `${formatBytes(this.confirmed)} of ${formatBytes(this.file.size)} stored`);
      this.row.querySelector('.upload-bytes').textContent =
        `${formatBytes(sent)} sent · ${formatBytes(this.confirmed)} of ${formatBytes(this.file.size)} stored`;
      const speed = this.speed();
      this.row.querySelector('.upload-speed').textContent = this.state === 'uploading' && speed > 0
        ? `${formatBytes(speed)}/s · ${formatDuration((this.file.size - sent) / speed)}`
        : '';
    });
  }

  /// The browser's own SHA-256 of the file, in a worker: started after two chunks went out
  /// without it (their speed is the yardstick; a small file starts at once), stopped if the
  /// next two go more than 10 % slower.
  weighCheck(rate) {
    this.chunkRates.push(rate);
    const n = this.chunkRates.length;
    const mean = (rates) => rates.reduce((a, b) => a + b, 0) / rates.length;
    if (this.check === 'waiting' && (n === 2 || this.file.size <= 3 * CHUNK_FIRST)) {
      this.baseline = mean(this.chunkRates.slice(-2));
      this.startCheck();
    } else if (this.check === 'hashing' && n === 4 && this.baseline > 0) {
      if (mean(this.chunkRates.slice(2, 4)) < VERIFY_SLOWDOWN * this.baseline) {
        this.worker.terminate();
        this.check = 'off';
        this.row.dataset.verified = 'off';
      }
    }
  }

  startCheck() {
    this.check = 'hashing';
    this.worker = new Worker('/static/hash-worker.js', { type: 'module' });
    this.worker.onmessage = (event) => {
      if (event.data.hex) {
        this.browserDigest = event.data.hex;
        this.check = 'done';
        this.worker.terminate();
        if (this.serverDigest) this.showVerified();
      }
    };
    this.worker.onerror = () => { this.check = 'off'; };
    this.worker.postMessage({ file: this.file });
  }

  showVerified() {
    const badge = this.row.querySelector('.upload-verified');
    const same = this.browserDigest === this.serverDigest;
    this.row.dataset.verified = same ? 'yes' : 'no';
    badge.textContent = same
      ? 'Verified: this browser computed the same SHA-256'
      : 'Not verified: this browser computed another SHA-256';
    badge.hidden = false;
  }

  /// Once a second: what went out in that second joins the chart (a stall shows as a gap).
  tick() {
    const sent = Math.max(this.sent, this.confirmed);
    if (this.state === 'uploading' || this.state === 'retrying' || this.rates.length > 0) {
      if (!FINAL.has(this.state)) {
        this.rates.push(Math.max(0, sent - this.ticked));
        if (this.rates.length > CHART_SECONDS) this.rates.shift();
      }
    }
    this.ticked = sent;
    this.drawChart();
  }

  drawChart() {
    const canvas = this.row.querySelector('.upload-chart');
    if (this.rates.length === 0 || !canvas.getContext) return;
    canvas.hidden = false;
    const context = canvas.getContext('2d');
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    context.fillStyle = getComputedStyle(this.row).getPropertyValue('--accent').trim() || '#2563eb';
    const most = Math.max(...this.rates, 1);
    const step = width / CHART_SECONDS;
    const first = CHART_SECONDS - this.rates.length;
    this.rates.forEach((rate, i) => {
      const h = Math.round((rate / most) * (height - 2));
      context.fillRect((first + i) * step, height - h, Math.max(1, step - 1), h);
    });
    canvas.dataset.seconds = String(this.rates.length);
    canvas.dataset.stalls = String(this.rates.filter((r) => r === 0).length);
    const peak = formatBytes(most);
    canvas.setAttribute('aria-label', `Throughput over the last ${this.rates.length} s, at most ${peak}/s`);
  }

  speed() {
    const now = performance.now();
    this.samples = this.samples.filter(([t]) => now - t < 5000);
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }

  async run() {
    if (this.running || FINAL.has(this.state)) return;
    this.running = true;
    clearTimeout(this.retryTimer);
    this.setState('uploading');
    try {
      await this.locate();
      this.watch();
      while (this.state === 'uploading' && this.offset < this.file.size) {
        await this.sendChunk();
      }
      if (this.offset >= this.file.size && !FINAL.has(this.state)) await this.settle();
    } catch (error) {
      if (error instanceof Stopped) return;
      if (error instanceof Retry) {
        this.scheduleRetry(error.message);
      } else {
        this.setState('failed', error.message);
      }
    } finally {
      this.running = false;
      schedule();
    }
  }

  /// Finds the upload on the server: the one remembered for this file, or a new one.
  async locate() {
    const known = localStorage.getItem(this.key);
    if (known) {
      const response = await call(() => fetch(`/uploads/${known}`, { method: 'HEAD', cache: 'no-store' }));
      if (response.ok) {
        this.setId(known);
        this.offset = Number(response.headers.get('Upload-Offset'));
        this.sent = this.offset;
        this.confirm(this.offset, true);
        return;
      }
      // 404 or 410: that upload is gone; start anew.
      localStorage.removeItem(this.key);
    }
    const body = JSON.stringify({ name: this.file.name, size: this.file.size, content_type: this.file.type || null });
    let response;
    for (let attempt = 0; ; attempt += 1) {
      const headers = { 'Content-Type': 'application/json' };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      response = await call(() => fetch('/uploads', { method: 'POST', headers, body }));
      if (response.status !== 401 || attempt >= 2) break;
      // This server only lets token holders start uploads: ask, and keep it for this tab only.
      tokenNeeded();
      const given = await askToken(attempt > 0);
      if (!given) throw new Error('this server needs an access token to start uploads');
      sessionStorage.setItem(TOKEN_KEY, given);
    }
    if (!response.ok) throw new Error(await errorOf(response));
    const status = await response.json();
    if (this.cancelled) {
      // Cancelled while it was being created: it must not outlive the row.
      await fetch(`/uploads/${status.id}`, { method: 'DELETE' }).catch(() => {});
      throw new Stopped();
    }
    this.setId(status.id);
    localStorage.setItem(this.key, status.id);
    remember(status);
    this.offset = status.received;
    this.applyStatus(status, true);
  }

  setId(id) {
    this.id = id;
    this.row.dataset.uploadId = id;
    const view = this.row.querySelector('.upload-view');
    view.href = `/uploads/${id}/view`;
    view.hidden = false;
    this.row.querySelector('[data-action=copy]').hidden = false;
  }

  /// The live view's address, for the person on the other end.
  async copyLink() {
    const url = `${location.origin}/uploads/${this.id}/view`;
    const button = this.row.querySelector('[data-action=copy]');
    try {
      await navigator.clipboard.writeText(url);
      button.textContent = 'Copied';
    } catch {
      window.prompt('Copy this link:', url);
    }
    setTimeout(() => { button.textContent = 'Copy link'; }, 2000);
  }

  applyStatus(status, exact) {
    this.confirm(status.received, exact);
    if (status.state === 'complete') this.complete(status);
    if (status.state === 'failed') {
      this.showResult(status);
      // Final on the server: nothing to resume on a later visit.
      localStorage.removeItem(this.key);
      this.setState('failed', status.failure === 'rejected'
        ? 'the server refused the file'
        : 'the file\'s SHA-256 did not match');
    }
  }

  async sendChunk() {
    const start = this.offset;
    const end = Math.min(start + this.chunk, this.file.size);
    const began = performance.now();
    const answer = await this.patch(start, this.file.slice(start, end));
    if (answer.status === 200) {
      const status = JSON.parse(answer.text);
      this.offset = status.received;
      this.backoff = BACKOFF_FIRST;
      const seconds = (performance.now() - began) / 1000;
      const rate = (end - start) / Math.max(seconds, 0.001);
      this.chunk = Math.min(CHUNK_MAX, Math.max(CHUNK_MIN, Math.round((rate * TARGET_SECONDS) / MIB) * MIB));
      this.weighCheck(rate);
      this.applyStatus(status, false);
      return;
    }
    let body = {};
    try { body = JSON.parse(answer.text); } catch { /* not JSON */ }
    if (answer.status === 409 && body.error === 'not_uploading') {
      await this.settle();
    } else if (answer.status === 409 && typeof body.received === 'number') {
      // The server holds a different count (a stale request took over): go on from it.
      this.offset = body.received;
      this.confirm(body.received, true);
    } else if (answer.status === 0 || answer.status >= 500) {
      throw new Retry(body.message || `HTTP ${answer.status}`);
    } else {
      throw new Error(body.message || `HTTP ${answer.status}`);
    }
  }

  patch(offset, blob) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open('PATCH', `/uploads/${this.id}`);
      xhr.setRequestHeader('Upload-Offset', String(offset));
      xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
      xhr.upload.onprogress = (event) => {
        this.sent = offset + event.loaded;
        this.samples.push([performance.now(), this.sent]);
        this.render();
      };
      xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
      xhr.onerror = () => reject(new Retry('the connection was lost'));
      xhr.onabort = () => reject(new Stopped());
      xhr.send(blob);
    });
  }

  /// Reads the final status once every byte is there.
  async settle() {
    const response = await call(() => fetch(`/uploads/${this.id}`, { cache: 'no-store' }));
    if (!response.ok) throw new Error(await errorOf(response));
    this.applyStatus(await response.json(), true);
  }

  complete(status) {
    this.offset = status.received;
    this.sent = status.received;
    this.serverDigest = status.sha256;
    // A small file may finish before its first chunk was weighed.
    if (this.check === 'waiting') this.startCheck();
    if (this.check === 'done') this.showVerified();
    localStorage.removeItem(this.key);
    updateHint();
    renderHistory();
    this.showResult(status);
    if (this.state !== 'complete') this.setState('complete');
    this.stopWatching();
  }

  showResult(status) {
    const result = this.row.querySelector('.upload-result');
    result.hidden = false;
    this.row.querySelector('.upload-sha').textContent = status.sha256 || '';
    const link = this.row.querySelector('.upload-link');
    link.href = `/uploads/${status.id}/content`;
    link.hidden = status.state !== 'complete';
  }

  scheduleRetry(reason) {
    this.setState('retrying', `${reason}; trying again in ${Math.round(this.backoff / 1000)} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.run(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
  }

  /// A failed row, tried again from where the server stands (a token given this time, say).
  retryFailed() {
    if (this.state !== 'failed') return;
    this.backoff = BACKOFF_FIRST;
    this.row.querySelector('.upload-result').hidden = true;
    this.setState('queued');
    schedule();
  }

  /// Takes a finished or failed row off the list (the stored file stays on the server).
  remove() {
    if (!FINAL.has(this.state)) return;
    this.stopWatching();
    if (this.state === 'failed' && !this.id) localStorage.removeItem(this.key);
    uploads.splice(uploads.indexOf(this), 1);
    this.row.remove();
    updateHint();
  }

  retryNow() {
    if (this.state === 'retrying') {
      this.backoff = BACKOFF_FIRST;
      this.run();
    }
  }

  pause() {
    if (FINAL.has(this.state)) return;
    clearTimeout(this.retryTimer);
    this.setState('paused');
    if (this.xhr) this.xhr.abort();
    schedule();
  }

  resume() {
    if (this.state !== 'paused') return;
    this.backoff = BACKOFF_FIRST;
    this.setState('queued');
    schedule();
  }

  async cancel() {
    this.cancelled = true;
    clearTimeout(this.retryTimer);
    this.setState('paused');
    if (this.xhr) this.xhr.abort();
    this.stopWatching();
    if (this.id) {
      try { await fetch(`/uploads/${this.id}`, { method: 'DELETE' }); } catch { /* gone anyway */ }
    }
    localStorage.removeItem(this.key);
    uploads.splice(uploads.indexOf(this), 1);
    this.row.remove();
    updateHint();
    schedule();
  }

  /// Confirmed progress from the server: a WebSocket, or long polling where it cannot open.
  watch() {
    if (this.watching || FINAL.has(this.state)) return;
    this.watching = true;
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/uploads/${this.id}/ws`;
    let opened = false;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => { opened = true; };
    socket.onmessage = (event) => {
      const status = JSON.parse(event.data);
      this.confirm(status.received, false);
      if (status.state === 'complete' && this.state !== 'complete') this.complete(status);
    };
    socket.onclose = () => {
      this.socket = null;
      if (!this.watching) return;
      this.watching = false;
      if (FINAL.has(this.state)) return;
      // A socket that never opened (a proxy in the way): long poll instead.
      if (!opened) this.longPoll();
      else setTimeout(() => this.watch(), 1000);
    };
  }

  async longPoll() {
    this.watching = true;
    const since = performance.now();
    while (this.watching && !FINAL.has(this.state)) {
      if (performance.now() - since > 30000) {
        // The WebSocket may work again (a proxy restarted, the network changed).
        this.watching = false;
        this.watch();
        return;
      }
      try {
        const response = await fetch(`/uploads/${this.id}/poll?received=${this.confirmed}&timeout=25`, { cache: 'no-store' });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const status = await response.json();
        this.confirm(status.received, false);
        if (status.state === 'complete') this.complete(status);
      } catch {
        await new Promise((resolve) => { setTimeout(resolve, 2000); });
      }
    }
  }

  stopWatching() {
    this.watching = false;
    if (this.socket) this.socket.close();
  }
}

/// One prompt at a time, even when several uploads start together.
let pendingToken = null;
function askToken(again) {
  if (!pendingToken) {
    pendingToken = Promise.resolve().then(() => {
      const answer = window.prompt(again
        ? 'That token was not accepted. Access token for uploads:'
        : 'This server needs an access token to start uploads. Token:');
      pendingToken = null;
      return answer && answer.trim();
    });
  }
  return pendingToken;
}

function schedule() {
  let active = uploads.filter((u) => u.running || u.state === 'retrying').length;
  for (const upload of uploads) {
    if (active >= PARALLEL) break;
    if (upload.state === 'queued' && !upload.running) {
      active += 1;
      upload.run();
    }
  }
}

function addFiles(files) {
  for (const file of files) {
    const same = uploads.find((u) => u.key === fingerprint(file));
    if (same && same.state === 'failed') {
      // Chosen again after failing: a fresh try on a fresh row.
      same.remove();
    } else if (same) {
      // Chosen again: the same upload, with the fresh File the browser handed over.
      same.file = file;
      continue;
    }
    uploads.push(new Upload(file));
  }
  schedule();
  updateHint();
}

/// Names the files an earlier visit left unfinished, so the person knows what to choose again.
function updateHint() {
  const prefix = 'resumable::';
  const suffix = `::${ENDPOINT}`;
  const open = new Set(uploads.map((u) => u.key));
  const names = Object.keys(localStorage)
    .filter((k) => k.startsWith(prefix) && k.endsWith(suffix) && !open.has(k))
    .map((k) => k.slice(prefix.length, -suffix.length).split('::').slice(0, -2).join('::'));
  const hint = document.getElementById('resume-hint');
  hint.hidden = names.length === 0;
  hint.querySelector('.resume-names').textContent = names.join(', ');
}

/// This browser's uploads, newest first: what it started, to look at again later.
function history() {
  try {
    const entries = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
    return Array.isArray(entries) ? entries : [];
  } catch {
    return [];
  }
}

function remember(status) {
  const entries = history().filter((e) => e.id !== status.id);
  entries.unshift({ id: status.id, name: status.name, size: status.size, at: Date.now() });
  localStorage.setItem(HISTORY_KEY, JSON.stringify(entries.slice(0, HISTORY_MAX)));
  renderHistory();
}

function forget(id) {
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history().filter((e) => e.id !== id)));
  renderHistory();
}

/// The list, each entry with its state as the server tells it now.
function renderHistory() {
  const entries = history();
  const section = document.getElementById('history');
  const list = section.querySelector('ul');
  section.hidden = entries.length === 0;
  list.replaceChildren(...entries.map((entry) => {
    const item = document.getElementById('history-row').content.firstElementChild.cloneNode(true);
    item.dataset.uploadId = entry.id;
    const name = item.querySelector('.history-name');
    name.textContent = entry.name;
    name.href = `/uploads/${entry.id}/view`;
    const remove = item.querySelector('[data-action=forget]');
    remove.setAttribute('aria-label', `Remove ${entry.name} from this list`);
    remove.addEventListener('click', () => forget(entry.id));
    fillHistoryState(item, entry);
    return item;
  }));
}

async function fillHistoryState(item, entry) {
  const state = item.querySelector('.history-state');
  let text;
  try {
    const response = await fetch(`/uploads/${entry.id}`, { cache: 'no-store' });
    if (response.status === 404 || response.status === 410) {
      text = 'no longer on the server';
    } else if (!response.ok) {
      text = 'unknown for now';
    } else {
      const status = await response.json();
      item.dataset.historyState = status.state;
      text = status.state === 'uploading'
        ? `${formatBytes(status.received)} of ${status.size === null ? '?' : formatBytes(status.size)} stored`
        : status.state;
      const link = item.querySelector('.history-download');
      link.href = `/uploads/${entry.id}/content`;
      link.hidden = status.state !== 'complete';
    }
  } catch {
    text = 'the server cannot be reached';
  }
  state.textContent = text;
}

/// The terminal example carries the token once the server has asked for one.
function tokenNeeded() {
  for (const element of document.querySelectorAll('.token-part')) element.hidden = false;
}

input.form.addEventListener('submit', (event) => event.preventDefault());
input.addEventListener('change', () => {
  addFiles(input.files);
  input.value = '';
});
drop.addEventListener('dragover', (event) => {
  event.preventDefault();
  drop.classList.add('dragging');
});
drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('dragging');
  addFiles(event.dataTransfer.files);
});
window.addEventListener('online', () => uploads.forEach((u) => u.retryNow()));
setInterval(() => uploads.forEach((u) => u.tick()), 1000);
for (const element of document.querySelectorAll('.origin')) element.textContent = location.origin;
updateHint();
renderHistory();
