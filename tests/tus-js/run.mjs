// Runs the real tus-js-client (from npm) against resumable and prints what happened as JSON.
// Usage: node run.mjs <endpoint> <scenario> <file> [<extra>]
// Scenarios: basic, resume, resume-elsewhere (<extra>: the second endpoint), with-upload,
// deferred, ietf;
// parallel (<extra>: a URL storage file): `parallelUploads: 4`, aborted after a quarter of the
// bytes, the partial uploads' URLs left in the URL storage;
// parallel-resume (<extra>: the same URL storage file): a new Upload of the same file resumes
// the stored partial uploads and creates the final one;
// speed (<extra>: parallelUploads): the file once, timed.
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, scenario, path, extra] = process.argv.slice(2);
const elsewhere = extra;
// The parallel scenarios read the file in slices as they send it (it may be large).
const data = ['parallel', 'parallel-resume', 'speed'].includes(scenario) ? null : fs.readFileSync(path);
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

const started = process.hrtime.bigint();
const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;

// A parallel upload of the file (read from disk as it goes): every request and answer is
// recorded. With `stopAfter`, it is aborted once the partial uploads have had that many bytes
// accepted in all, and resolves once the URL storage holds the partial uploads' URLs. With
// `resume`, it starts from the upload the URL storage keeps for this file.
function runParallel(options) {
  const { stopAfter, resume, ...tusOptions } = options;
  return new Promise((resolve, reject) => {
    const exchanges = [];
    let accepted = 0;
    let stopped = false;
    const upload = new tus.Upload(fs.createReadStream(path), {
      endpoint,
      retryDelays: [],
      metadata: { filename: 'tus file.bin', filetype: 'application/x-test' },
      onBeforeRequest(req) {
        req._exchange = {
          at: seconds(),
          method: req.getMethod(),
          url: req.getURL(),
          concat: req.getHeader('Upload-Concat') ?? null,
          offset: req.getHeader('Upload-Offset') == null ? null : Number(req.getHeader('Upload-Offset')),
        };
        exchanges.push(req._exchange);
      },
      onAfterResponse(req, res) {
        const exchange = req._exchange ?? {};
        exchange.answeredAt = seconds();
        exchange.status = res.getStatus();
        exchange.location = res.getHeader('Location') ?? null;
        const offset = res.getHeader('Upload-Offset');
        exchange.answeredOffset = offset == null ? null : Number(offset);
      },
      onChunkComplete(size) {
        accepted += size;
        if (stopAfter && !stopped && accepted >= stopAfter) {
          stopped = true;
          upload
            .abort()
            .then(() => storedUpload(upload, tusOptions.parallelUploads))
            .then((stored) => resolve({ exchanges, stoppedAt: accepted, stored }))
            .catch(reject);
        }
      },
      onError: reject,
      onSuccess: () => resolve({ url: upload.url, exchanges }),
      ...tusOptions,
    });
    (async () => {
      if (resume) {
        const previous = (await upload.findPreviousUploads()).filter((u) => u.parallelUploadUrls);
        if (previous.length !== 1) throw new Error(`${previous.length} stored parallel uploads`);
        upload.resumeFromPreviousUpload(previous[0]);
      }
      upload.start();
    })().catch(reject);
  });
}

// The upload the URL storage keeps for this file, once it holds all `count` partial URLs.
async function storedUpload(upload, count) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const stored = (await upload.findPreviousUploads()).find(
      (u) => u.parallelUploadUrls?.length === count && u.parallelUploadUrls.every(Boolean),
    );
    if (stored) return stored;
    if (Date.now() > deadline) throw new Error('the URL storage never held the partial uploads');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const PARALLEL = { parallelUploads: 4, chunkSize: 8 * MIB };

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
  case 'parallel': {
    // tus-js-client keeps resumable uploads in a URL storage; in Node, a file.
    const urlStorage = new tus.FileUrlStorage(extra);
    const size = fs.statSync(path).size;
    const first = await runParallel({ ...PARALLEL, urlStorage, stopAfter: Math.floor(size / 4) });
    result = {
      stoppedAt: first.stoppedAt,
      partialUrls: first.stored.parallelUploadUrls,
      exchanges: first.exchanges,
    };
    break;
  }
  case 'parallel-resume': {
    const urlStorage = new tus.FileUrlStorage(extra);
    const second = await runParallel({ ...PARALLEL, urlStorage, resume: true });
    result = { url: second.url, exchanges: second.exchanges };
    break;
  }
  case 'speed': {
    const parallelUploads = Number(extra ?? 1);
    const begun = seconds();
    const { url, exchanges } = await runParallel({ parallelUploads, storeFingerprintForResuming: false });
    const final = exchanges.find((e) => e.concat?.startsWith('final;'));
    result = {
      url,
      seconds: seconds() - begun,
      // How long the final upload's creation (the server's assembly) took.
      finalSeconds: final ? final.answeredAt - final.at : null,
    };
    break;
  }
  default:
    throw new Error(`unknown scenario ${scenario}`);
}
console.log(JSON.stringify(result));
