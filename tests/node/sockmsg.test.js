'use strict';
/*
 * The checks tests/node.sh runs on examples/node/sockmsg.js (node:test).
 *
 *   SOCKMSG_ADDR=127.0.0.1:PORT node tests/node/sockmsg.test.js
 *
 * The "decoder" tests feed bytes by hand; the "echo server" tests talk to
 * the C echo server at SOCKMSG_ADDR: messages of 0 bytes to 1 MiB, three
 * messages in one write, and back-pressure from an unread decoder all the
 * way to the sender.
 */
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
// tests/node.sh sets SOCKMSG_MODULE to the package npm installed; run by
// hand without it, the tests take examples/node/sockmsg.js itself.
const sockmsg = require(process.env.SOCKMSG_MODULE || path.join(__dirname, '../../examples/node/sockmsg.js'));

const ADDR = process.env.SOCKMSG_ADDR;

/* Bytes that depend on the message and the offset, so a shifted, mixed-up
 * or truncated message never matches. */
function pattern(i, size) {
  const b = Buffer.allocUnsafe(size);
  for (let k = 0; k < size; k++)
    b[k] = (i * 7 + k) % 251;
  return b;
}

/* Feeds chunks to a fresh Decoder, then ends it: the messages and the
 * error, if any. */
function decode(chunks, options) {
  return new Promise((resolve) => {
    const d = new sockmsg.Decoder(options);
    const got = [];
    d.on('data', (m) => got.push(m));
    d.on('error', (error) => resolve({ got, error }));
    d.on('end', () => resolve({ got, error: null }));
    for (const c of chunks)
      d.write(c);
    d.end();
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/* Resolves true on the emitter's event, false after ms. */
function eventWithin(emitter, event, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { emitter.off(event, on); resolve(false); }, ms);
    function on() { clearTimeout(timer); resolve(true); }
    emitter.once(event, on);
  });
}

async function connected() {
  const socket = sockmsg.connect(ADDR);
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

test('frame: the header is the big-endian length', () => {
  assert.deepStrictEqual(sockmsg.frame('TEST'), Buffer.from([0, 0, 0, 4, 0x54, 0x45, 0x53, 0x54]));
  assert.deepStrictEqual(sockmsg.frame(Buffer.alloc(0)), Buffer.from([0, 0, 0, 0]));
  assert.deepStrictEqual(sockmsg.frame(Buffer.alloc(256)).subarray(0, 4), Buffer.from([0, 0, 1, 0]));
});

test('decoder: the same messages however the stream is split', async () => {
  const sizes = [0, 1, 3, 4, 5, 0, 255, 256, 1000, 0, 2];
  const msgs = sizes.map((n, i) => pattern(i, n));
  const wire = Buffer.concat(msgs.map(sockmsg.frame));
  for (const size of [1, 2, 3, 4, 5, 6, 7, 11, 64, 1003, wire.length]) {
    const chunks = [];
    for (let off = 0; off < wire.length; off += size)
      chunks.push(wire.subarray(off, off + size));
    const { got, error } = await decode(chunks);
    assert.strictEqual(error, null, `chunks of ${size}`);
    assert.deepStrictEqual(got, msgs, `chunks of ${size}`);
  }
});

test('decoder: a message inside one chunk is a view, not a copy', async () => {
  const wire = Buffer.concat([sockmsg.frame('hello'), sockmsg.frame('world')]);
  const { got } = await decode([wire]);
  assert.strictEqual(got.length, 2);
  assert.strictEqual(got[0].buffer, wire.buffer);
  assert.strictEqual(got[1].byteOffset, wire.byteOffset + 13);
});

test('decoder: a header over maxLen fails before the payload arrives', async () => {
  const d = new sockmsg.Decoder({ maxLen: 8 });
  const failed = new Promise((resolve) => d.on('error', resolve));
  d.resume();
  d.write(Buffer.from([0, 0, 0, 9])); // the header alone
  const error = await failed;
  assert.ok(error instanceof sockmsg.MessageTooBigError, String(error));
  assert.strictEqual(error.announced, 9);
  assert.strictEqual(error.code, 'SM_ETOOBIG');
  const huge = await decode([Buffer.from([0xff, 0xff]), Buffer.from([0xff, 0xff])]);
  assert.ok(huge.error instanceof sockmsg.MessageTooBigError);
  assert.strictEqual(huge.error.announced, 0xffffffff);
});

test('decoder: exactly maxLen is accepted', async () => {
  const { got, error } = await decode([sockmsg.frame('12345678')], { maxLen: 8 });
  assert.strictEqual(error, null);
  assert.deepStrictEqual(got, [Buffer.from('12345678')]);
});

test('decoder: the end of the stream inside a message is truncation', async () => {
  const clean = await decode([sockmsg.frame('hi')]);
  assert.strictEqual(clean.error, null, 'a stream ending between messages is a clean end');
  const empty = await decode([]);
  assert.strictEqual(empty.error, null);
  for (const cut of [Buffer.from([0, 0]), Buffer.from([0, 0, 0, 4, 0x54, 0x45])]) {
    const { got, error } = await decode([cut]);
    assert.ok(error instanceof sockmsg.TruncatedMessageError, `${cut.toString('hex')}: ${error}`);
    assert.strictEqual(error.code, 'SM_ETRUNCATED');
    assert.deepStrictEqual(got, []);
  }
});

test('decoder: memory follows the bytes received, not the announced length', () => {
  const d = new sockmsg.Decoder();
  d.write(Buffer.from([1, 0, 0, 0])); // 16 MiB announced...
  d.write(Buffer.alloc(10)); // ...10 bytes sent
  const held = d.parts.reduce((n, p) => n + p.length, 0);
  assert.strictEqual(held, 10);
  d.destroy();
});

test('echo server: messages of 0 bytes to 1 MiB come back whole', { skip: !ADDR }, async () => {
  const socket = await connected();
  const replies = sockmsg.messages(socket)[Symbol.asyncIterator]();
  const sizes = [0, 1, 4, 0, 100, 65535, 65536, 65537, 70000, 1 << 20];
  for (let i = 0; i < sizes.length; i++) {
    const want = pattern(i, sizes[i]);
    sockmsg.send(socket, want);
    const { value } = await replies.next();
    assert.ok(value && want.equals(value), `message ${i}: ${sizes[i]} bytes`);
  }
  // Three messages in one write come back as three.
  const three = [Buffer.from('hi'), Buffer.alloc(0), Buffer.from('abc')];
  socket.write(Buffer.concat(three.map(sockmsg.frame)));
  for (const want of three)
    assert.deepStrictEqual((await replies.next()).value, want);
  socket.end();
  assert.ok((await replies.next()).done, 'the server closed cleanly after us');
});

test('echo server: an unread decoder holds back the socket and the sender', { skip: !ADDR },
  async () => {
    const socket = await connected();
    const decoder = sockmsg.messages(socket); // not read yet
    const msg = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    let stalled = false;
    // Send until no 'drain' comes for half a second: the server has
    // stopped reading us because we do not read its echoes.  At most 64 MiB.
    while (!stalled && sent < 1024) {
      sent++;
      if (!sockmsg.send(socket, msg))
        stalled = !(await eventWithin(socket, 'drain', 500));
    }
    assert.ok(stalled, `${sent} messages of 64 KiB went out without the sender being held back`);
    assert.ok(socket.isPaused(), 'the socket still reads while nobody takes the messages');
    assert.ok(decoder.readableLength <= 32, `${decoder.readableLength} messages buffered`);
    const bytesRead = socket.bytesRead;
    await sleep(200);
    assert.strictEqual(socket.bytesRead, bytesRead, 'the socket kept reading');
    assert.ok(bytesRead < sent * msg.length, 'everything was read anyway');
    // Reading again releases everything: every echo comes back, in order.
    let got = 0;
    for await (const m of decoder) {
      assert.ok(m.equals(msg), `echo ${got}`);
      if (++got === sent)
        break;
    }
    socket.destroy();
  });
