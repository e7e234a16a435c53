/*
 * Start etsy statsd's stats.js with a chosen UDP receive buffer.
 *
 * statsd has no option for SO_RCVBUF, so its socket gets the kernel's
 * net.core.rmem_default.  To compare it with our server on equal terms the
 * benchmark sets BENCH_UDP_RECEIVE_BUFFER, and this wrapper passes that
 * size to every dgram socket statsd creates (Node's recvBufferSize option,
 * capped by the kernel at net.core.rmem_max).  Unset or 0: stock statsd.
 *
 * Usage: node run.js <statsd package directory> <config file>
 */
'use strict';

const dgram = require('dgram');
const path = require('path');

const size = Number(process.env.BENCH_UDP_RECEIVE_BUFFER || 0);
if (size > 0) {
  const createSocket = dgram.createSocket;
  dgram.createSocket = function (options, callback) {
    const settings = typeof options === 'string' ? { type: options } : Object.assign({}, options);
    settings.recvBufferSize = size;
    const socket = createSocket.call(dgram, settings, callback);
    socket.on('listening', function () {
      // Linux reports twice the size it grants (bookkeeping included).
      console.log('bench: UDP receive buffer ' + socket.getRecvBufferSize() / 2 + ' bytes');
    });
    return socket;
  };
}

// BENCH_STATSD_SCRIPT=proxy.js runs the cluster proxy instead (bench/proxy.py).
const statsd = path.resolve(process.argv[2], process.env.BENCH_STATSD_SCRIPT || 'stats.js');
process.argv = [process.argv[0], statsd, path.resolve(process.argv[3])];
require(statsd);
