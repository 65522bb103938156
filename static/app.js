// The upload page: resumable uploads with PATCH at offsets, live progress from the server.
// No dependencies, no build step.

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

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '';
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.ceil(seconds % 60)} s left`;
  return `${Math.floor(seconds / 3600)} h ${Math.ceil((seconds % 3600) / 60)} min left`;
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
    throw new Retry(`network error: ${error.message}`);
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
    this.row = template.content.firstElementChild.cloneNode(true);
    this.row.querySelector('.upload-name').textContent = file.name;
    this.row.querySelector('[data-action=pause]').addEventListener('click', () => this.pause());
    this.row.querySelector('[data-action=resume]').addEventListener('click', () => this.resume());
    this.row.querySelector('[data-action=cancel]').addEventListener('click', () => this.cancel());
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
      const given = await askToken(attempt > 0);
      if (!given) throw new Error('this server needs an access token to start uploads');
      sessionStorage.setItem(TOKEN_KEY, given);
    }
    if (!response.ok) throw new Error(await errorOf(response));
    const status = await response.json();
    this.setId(status.id);
    localStorage.setItem(this.key, status.id);
    this.offset = status.received;
    this.applyStatus(status, true);
  }

  setId(id) {
    this.id = id;
    this.row.dataset.uploadId = id;
  }

  applyStatus(status, exact) {
    this.confirm(status.received, exact);
    if (status.state === 'complete') this.complete(status);
    if (status.state === 'failed') {
      this.showResult(status);
      this.setState('failed', 'the file\'s SHA-256 did not match');
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
    this.setState('retrying', reason);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.run(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
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
    while (this.watching && !FINAL.has(this.state)) {
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
    if (same && !same.row.isConnected) continue;
    if (same) {
      // Chosen again: the same upload, with the fresh File the browser handed over.
      same.file = file;
      if (same.state === 'paused' || same.state === 'failed') continue;
      continue;
    }
    uploads.push(new Upload(file));
  }
  schedule();
  updateHint();
}

function updateHint() {
  const waiting = Object.keys(localStorage).filter((k) => k.startsWith('resumable::') && k.endsWith(`::${ENDPOINT}`));
  const open = new Set(uploads.map((u) => u.key));
  document.getElementById('resume-hint').hidden = !waiting.some((k) => !open.has(k));
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
for (const element of document.querySelectorAll('.origin')) element.textContent = location.origin;
updateHint();
