// Hashes a File the page is uploading, off the main thread: reads it in 4 MiB slices and
// answers {hex} at the end, {progress} on the way.

import { Sha256 } from '/static/sha256.js';

const SLICE = 4 * 1024 * 1024;

self.onmessage = async (event) => {
  const { file } = event.data;
  const hasher = new Sha256();
  for (let at = 0; at < file.size; at += SLICE) {
    const bytes = new Uint8Array(await file.slice(at, at + SLICE).arrayBuffer());
    hasher.update(bytes);
    self.postMessage({ progress: Math.min(file.size, at + SLICE) });
  }
  self.postMessage({ hex: hasher.hex() });
};
