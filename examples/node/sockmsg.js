'use strict';
/*
 * sockmsg.js - whole messages over TCP and Unix sockets for Node.js, in
 * libsockmsg's wire format (docs/PROTOCOL.md).  Standard library only:
 * copy this file into your project.
 *
 * Every message goes on the wire as a 4-byte unsigned big-endian length N,
 * then N bytes, so "TEST" is sent as 00 00 00 04 54 45 53 54.  A net.Socket
 * delivers whatever part of the stream has arrived; the Decoder below turns
 * that back into whole messages.
 *
 *   const sockmsg = require('./sockmsg');
 *   const socket = sockmsg.connect('127.0.0.1:7000');
 *   sockmsg.send(socket, Buffer.from('hello'));      // false: wait for 'drain'
 *   for await (const msg of sockmsg.messages(socket))
 *       console.log(msg.toString());                  // one whole message
 *
 * Back-pressure is Node's own: a Decoder is a Transform stream, so while
 * nobody reads the messages it stops taking bytes, and messages() (a
 * pipeline from the socket) pauses the socket, so the kernel's buffers
 * fill and the sender slows down.  Memory stays bounded by the stream
 * buffers, not by what the peer sends.  On the way out, send() returns
 * socket.write()'s answer: false means wait for 'drain'.
 */
const net = require('net');
const { Transform, pipeline } = require('stream');

const HEADER_LEN = 4;
const MAX_LEN = 16 * 1024 * 1024; // libsockmsg's default maximum message

/** The peer announced a message longer than maxLen (err.announced). */
class MessageTooBigError extends Error {
  constructor(announced, max) {
    super(`peer announced a ${announced}-byte message, more than the ${max} allowed`);
    this.name = 'MessageTooBigError';
    this.code = 'SM_ETOOBIG';
    this.announced = announced;
  }
}

/** The stream ended in the middle of a message. */
class TruncatedMessageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TruncatedMessageError';
    this.code = 'SM_ETRUNCATED';
  }
}

/** The frame for msg (a Buffer or string): its length, then its bytes. */
function frame(msg) {
  const payload = Buffer.isBuffer(msg) ? msg : Buffer.from(msg);
  if (payload.length > 0xffffffff)
    throw new MessageTooBigError(payload.length, 0xffffffff);
  const header = Buffer.allocUnsafe(HEADER_LEN);
  header.writeUInt32BE(payload.length, 0);
  return Buffer.concat([header, payload], HEADER_LEN + payload.length);
}

/**
 * Sends msg as one message.  Returns what socket.write returns: false
 * when the socket's buffer is full, and the caller should wait for
 * 'drain' before sending more.
 */
function send(socket, msg) {
  return socket.write(frame(msg));
}

/**
 * A Transform stream: bytes in (in any pieces), whole messages out, one
 * Buffer each (an empty Buffer for an empty message).  A message that
 * arrives within one chunk is a view into it, not a copy; one split across
 * chunks is joined once it is complete.  Memory follows the bytes that
 * arrived, never the announced length.  Errors: MessageTooBigError as soon
 * as a header announces more than maxLen (before any payload is kept),
 * TruncatedMessageError if the input ends inside a message.
 */
class Decoder extends Transform {
  constructor({ maxLen = MAX_LEN } = {}) {
    super({ readableObjectMode: true });
    this.maxLen = maxLen;
    this.header = Buffer.alloc(HEADER_LEN);
    this.headerHave = 0;
    this.len = 0;     // payload length, once the header is complete
    this.parts = [];  // pieces of a payload split across chunks
    this.have = 0;    // bytes in parts
  }

  _transform(chunk, _encoding, done) {
    let off = 0;
    while (off < chunk.length) {
      if (this.headerHave < HEADER_LEN) {
        const take = Math.min(HEADER_LEN - this.headerHave, chunk.length - off);
        chunk.copy(this.header, this.headerHave, off, off + take);
        this.headerHave += take;
        off += take;
        if (this.headerHave < HEADER_LEN)
          break;
        this.len = this.header.readUInt32BE(0);
        if (this.len > this.maxLen)
          return done(new MessageTooBigError(this.len, this.maxLen));
      }
      const take = Math.min(this.len - this.have, chunk.length - off);
      if (this.have === 0 && take === this.len) {
        this.push(chunk.subarray(off, off + take)); // whole in this chunk
      } else {
        this.parts.push(chunk.subarray(off, off + take));
        this.have += take;
        if (this.have < this.len) {
          off += take;
          break;
        }
        this.push(Buffer.concat(this.parts, this.len));
        this.parts = [];
        this.have = 0;
      }
      off += take;
      this.headerHave = 0;
    }
    done();
  }

  _flush(done) {
    if (this.headerHave === 0)
      return done(); // ended between messages: a clean close
    done(new TruncatedMessageError(this.headerHave < HEADER_LEN
      ? `stream ended after ${this.headerHave} of the 4 header bytes`
      : `stream ended after ${this.have} of ${this.len} message bytes`));
  }
}

/**
 * The messages arriving on socket, as a readable stream of Buffers that is
 * also an async iterable.  The socket is piped into a Decoder with
 * stream.pipeline, so a protocol error (emitted on the returned stream)
 * destroys the socket too.
 */
function messages(socket, options) {
  const decoder = new Decoder(options);
  pipeline(socket, decoder, () => {}); // errors surface on decoder
  return decoder;
}

/**
 * Connects to addr: "host:port", "[v6addr]:port", ":port" (localhost) or
 * "unix:/path", as in libsockmsg.  Returns the net.Socket (listen for
 * 'connect' and 'error' as usual).  TCP_NODELAY is on, as in libsockmsg.
 */
function connect(addr, onConnect) {
  if (addr.startsWith('unix:'))
    return net.connect({ path: addr.slice(5) }, onConnect);
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
  if (!m || Number(m[3]) > 65535)
    throw new Error(`'${addr}': expected host:port, [v6]:port, :port or unix:/path`);
  const socket = net.connect({ host: m[1] || m[2] || 'localhost', port: Number(m[3]) }, onConnect);
  socket.setNoDelay(true);
  return socket;
}

module.exports = {
  HEADER_LEN, MAX_LEN, Decoder, MessageTooBigError, TruncatedMessageError,
  frame, send, messages, connect,
};
