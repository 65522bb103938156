// Numbers for people, shared by the upload page and the live view.

export function formatBytes(n) {
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

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return '';
  // Rounded once, up to whole seconds (or minutes), before splitting: never "1 min 60 s".
  const whole = Math.ceil(seconds);
  if (whole < 60) return `${whole} s left`;
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s left`;
  const minutes = Math.ceil(whole / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min left`;
}

/// Bytes per second over the last few seconds of (time in ms, bytes) samples.
export function rateOf(samples, now, window = 5000) {
  const recent = samples.filter(([t]) => now - t < window);
  if (recent.length < 2) return 0;
  const [t0, b0] = recent[0];
  const [t1, b1] = recent[recent.length - 1];
  return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
}
