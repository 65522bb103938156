// The live view of one upload, for anyone who has its id: its status over the WebSocket, long
// polls where that cannot open.

import { formatBytes, formatDuration, rateOf } from '/static/format.js';

const id = location.pathname.split('/')[2];
const view = document.getElementById('view');
const samples = [];
let last = null;

const LABELS = { uploading: 'Uploading', complete: 'Complete', failed: 'Failed' };

function isFinal(status) {
  return Boolean(status.removed) || status.state !== 'uploading';
}

function show(status) {
  last = status;
  const now = performance.now();
  samples.push([now, status.received]);
  while (samples.length > 0 && now - samples[0][0] > 10000) samples.shift();
  view.dataset.state = status.removed ? 'removed' : status.state;
  view.dataset.received = String(status.received);
  document.title = `${status.name} — resumable`;
  document.querySelector('.view-name').textContent = status.name;
  view.querySelector('.upload-name').textContent = status.name;
  let state = LABELS[status.state] || status.state;
  if (status.removed) state = status.removed === 'expired' ? 'Expired' : 'Deleted';
  if (status.state === 'failed' && status.failure === 'rejected') state = 'Failed: refused by the server';
  view.querySelector('.upload-state').textContent = state;
  const size = status.size;
  const fraction = size ? status.received / size : 0;
  view.querySelector('.bar-confirmed').style.width = `${100 * fraction}%`;
  const bar = view.querySelector('.bar');
  bar.setAttribute('aria-valuenow', String(Math.floor(100 * fraction)));
  bar.setAttribute('aria-valuetext', size === null
    ? `${formatBytes(status.received)} stored`
    : `${formatBytes(status.received)} of ${formatBytes(size)} stored`);
  view.querySelector('.upload-bytes').textContent = size === null
    ? `${formatBytes(status.received)} stored (size not known yet)`
    : `${formatBytes(status.received)} of ${formatBytes(size)} stored`;
  const speed = rateOf(samples, now);
  view.querySelector('.upload-speed').textContent = status.state === 'uploading' && speed > 0 && size
    ? `${formatBytes(speed)}/s · ${formatDuration((size - status.received) / speed)}`
    : '';
  const result = view.querySelector('.upload-result');
  result.hidden = !status.sha256;
  view.querySelector('.upload-sha').textContent = status.sha256 || '';
  const link = view.querySelector('.upload-link');
  link.href = `/uploads/${id}/content`;
  link.hidden = status.state !== 'complete' || Boolean(status.removed);
}

function socket() {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/uploads/${id}/ws`;
  let opened = false;
  const ws = new WebSocket(url);
  ws.onopen = () => { opened = true; };
  ws.onmessage = (event) => show(JSON.parse(event.data));
  ws.onclose = () => {
    if (last && isFinal(last)) return;
    // Never opened (a proxy in the way): long polls; else the connection dropped: again.
    if (!opened) poll();
    else setTimeout(socket, 1000);
  };
}

async function poll() {
  const since = performance.now();
  while (!last || !isFinal(last)) {
    if (performance.now() - since > 30000) {
      socket();
      return;
    }
    try {
      const received = last ? `received=${last.received}&` : '';
      const response = await fetch(`/uploads/${id}/poll?${received}timeout=25`, { cache: 'no-store' });
      if (response.status === 404 || response.status === 410) {
        gone(response.status);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      show(await response.json());
    } catch {
      await new Promise((resolve) => { setTimeout(resolve, 2000); });
    }
  }
}

function gone(status) {
  view.dataset.state = 'removed';
  view.querySelector('.upload-state').textContent =
    status === 404 ? 'No upload has this id' : 'Deleted or expired';
}

socket();
