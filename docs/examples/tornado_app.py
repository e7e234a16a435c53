"""A Tornado service that reports its request timings to statsd.

Run it against a statsd server (or the one in this package)::

    STATSD_HOST=127.0.0.1 python docs/examples/tornado_app.py
    curl -i http://127.0.0.1:8888/

Each request sends two timers, ``<prefix>.timers.some-operation`` and
``<prefix>.timers.MyHandler.GET.204``, and one counter,
``<prefix>.counters.greetings``.  The prefix is ``STATSD_PREFIX`` or, when that
is not set, ``applications.example.<ENVIRONMENT>``.  ``PORT`` picks the HTTP
port (``0`` for any free one).  SIGINT or SIGTERM stops the service after the
queued metrics have been sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import typing

from tornado import httpserver, netutil, web

import sprockets_statsd.tornado

__all__ = ['Application', 'MyHandler', 'main']

logger = logging.getLogger('tornado_app')


class MyHandler(sprockets_statsd.tornado.RequestHandler, web.RequestHandler):
    async def get(self) -> None:
        with self.execution_timer('some-operation'):
            await asyncio.sleep(0.05)  # stands in for real work
        self.increase_counter('greetings')
        self.set_status(204)


class Application(sprockets_statsd.tornado.Application, web.Application):
    def __init__(self, **settings: typing.Any) -> None:
        # Without STATSD_PREFIX, these two make the prefix
        # applications.example.<environment>.
        settings.setdefault('service', 'example')
        settings.setdefault('environment', os.environ.get('ENVIRONMENT', 'development'))
        super().__init__([web.url('/', MyHandler)], **settings)


async def main() -> None:
    app = Application()
    sockets = netutil.bind_sockets(int(os.environ.get('PORT', '8888')), '127.0.0.1')
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signo in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signo, stopping.set)

    await app.start_statsd()
    logger.info('listening on http://127.0.0.1:%d/', sockets[0].getsockname()[1])
    await stopping.wait()

    logger.info('stopping')
    server.stop()
    await server.close_all_connections()
    await app.stop_statsd()  # sends what is still queued


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    asyncio.run(main())
