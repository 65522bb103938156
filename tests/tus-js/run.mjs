// Runs the real tus-js-client (from npm) against resumable and prints what happened as JSON.
// Usage: node run.mjs <endpoint> <scenario> <file> [<second endpoint>]
// Scenarios: basic, resume, resume-elsewhere (through the second endpoint), with-upload,
// deferred, ietf.
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, scenario, path, elsewhere] = process.argv.slice(2);
const data = fs.readFileSync(path);
const MIB = 1024 * 1024;

function run(input, options) {
  return new Promise((resolve, reject) => {
    const patches = [];
    const upload = new tus.Upload(input, {
      endpoint,
      retryDelays: [],
      metadata: { filename: 'tus file.bin', filetype: 'application/x-test' },
      onBeforeRequest(req) {
        if (req.getMethod() === 'PATCH') patches.push(Number(req.getHeader('Upload-Offset')));
      },
      onError: reject,
      onSuccess: () => resolve({ url: upload.url, patches }),
      ...options,
      ...(options.stopAfter ? {
        onChunkComplete(_size, accepted) {
          if (accepted >= options.stopAfter) {
            upload.abort().then(() => resolve({ url: upload.url, patches, stoppedAt: accepted }));
          }
        },
      } : {}),
    });
    upload.start();
  });
}

let result;
switch (scenario) {
  case 'basic':
    result = await run(data, { chunkSize: 4 * MIB });
    break;
  case 'resume': {
    const first = await run(data, { chunkSize: 1 * MIB, stopAfter: 8 * MIB });
    const second = await run(data, { chunkSize: 4 * MIB, uploadUrl: first.url });
    result = { url: second.url, firstUrl: first.url, stoppedAt: first.stoppedAt, patches: second.patches };
    break;
  }
  case 'resume-elsewhere': {
    // Another instance behind the same service: the upload's URL on the second endpoint.
    const first = await run(data, { chunkSize: 1 * MIB, stopAfter: 8 * MIB });
    const moved = new URL(new URL(first.url).pathname, elsewhere).href;
    const second = await run(data, { chunkSize: 4 * MIB, uploadUrl: moved, endpoint: elsewhere });
    result = { url: second.url, firstUrl: first.url, stoppedAt: first.stoppedAt, patches: second.patches };
    break;
  }
  case 'with-upload':
    result = await run(data, { chunkSize: 3 * MIB, uploadDataDuringCreation: true });
    break;
  case 'deferred':
    result = await run(data, { chunkSize: 4 * MIB, uploadLengthDeferred: true });
    break;
  case 'ietf':
    result = await run(data, { chunkSize: 4 * MIB, protocol: 'ietf-draft-05' });
    break;
  default:
    throw new Error(`unknown scenario ${scenario}`);
}
console.log(JSON.stringify(result));
