'use strict';
/*
 * echo-client.js - sends messages to a libsockmsg server and prints each
 * reply: a client for the echo server (build/examples/echo-server), on
 * sockmsg.js.
 *
 *   node examples/node/echo-client.js 127.0.0.1:PORT hello "" world
 *
 * Each argument after the address is one message; with none, each line of
 * standard input is one.  One request at a time: each reply is printed on
 * a line of its own before the next message goes.  Exit status 0, or 1 on
 * any error.
 */
const readline = require('readline');
const sockmsg = require('./sockmsg');

async function main(argv) {
  if (argv.length < 1) {
    process.stderr.write('usage: node echo-client.js HOST:PORT [MESSAGE...]\n');
    return 2;
  }
  const addr = argv[0];
  let lines = argv.slice(1);
  if (lines.length === 0) {
    lines = [];
    for await (const line of readline.createInterface({ input: process.stdin }))
      lines.push(line);
  }
  const socket = sockmsg.connect(addr);
  const replies = sockmsg.messages(socket)[Symbol.asyncIterator]();
  try {
    for (const line of lines) {
      sockmsg.send(socket, Buffer.from(line, 'utf8'));
      const { value, done } = await replies.next();
      if (done)
        throw new Error('connection closed by peer');
      process.stdout.write(Buffer.concat([value, Buffer.from('\n')]));
    }
  } catch (e) {
    process.stderr.write(`echo-client: ${addr}: ${e.message}\n`);
    return 1;
  } finally {
    socket.end();
  }
  return 0;
}

main(process.argv.slice(2)).then((status) => { process.exitCode = status; });
