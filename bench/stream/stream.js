// bench/stream: the same pipelines as bench_stream.c in Node's streams.
//   node stream.js mem <total bytes> <chunk>   memory -> 3 PassThrough -> sink
//   node stream.js file <path> <chunk>          file -> SHA-256 pass-through -> sink
// Prints "<MB/s>" (and the digest for file), as bench_stream.c does.
'use strict';
const { Readable, PassThrough, Transform, Writable, pipeline } = require('node:stream');
const fs = require('node:fs');
const crypto = require('node:crypto');

const [mode, arg, chunkArg] = process.argv.slice(2);
const chunk = Number(chunkArg);
const opts = { highWaterMark: 64 * 1024 }; // reelway's default HWM

function sink() {
  const s = new Writable({ ...opts, write(c, enc, cb) { s.bytes += c.length; cb(); } });
  s.bytes = 0;
  return s;
}

if (mode === 'mem') {
  const total = Number(arg);
  const buf = Buffer.alloc(chunk, 'x');
  let left = total;
  // Slices of one buffer, pushed while push() says yes: as reelway's source.
  const src = new Readable({
    ...opts,
    read() {
      while (left > 0) {
        const n = Math.min(left, chunk);
        left -= n;
        if (!this.push(buf.subarray(0, n))) return;
      }
      this.push(null);
    },
  });
  const out = sink();
  const t0 = process.hrtime.bigint();
  pipeline(src, new PassThrough(opts), new PassThrough(opts), new PassThrough(opts), out, (err) => {
    if (err || out.bytes !== total) { console.error(err); process.exit(1); }
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log((total / dt / 1e6).toFixed(0));
  });
} else if (mode === 'file') {
  const hash = crypto.createHash('sha256');
  const sha = new Transform({ ...opts, transform(c, enc, cb) { hash.update(c); cb(null, c); } });
  const out = sink();
  const t0 = process.hrtime.bigint();
  pipeline(fs.createReadStream(arg, { highWaterMark: chunk }), sha, out, (err) => {
    if (err) { console.error(err); process.exit(1); }
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`${(out.bytes / dt / 1e6).toFixed(0)} ${hash.digest('hex')}`);
  });
} else {
  console.error('usage: node stream.js mem <bytes> <chunk> | file <path> <chunk>');
  process.exit(2);
}
