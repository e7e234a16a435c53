"""The ``sprockets-statsd-server`` command line (gstatsd compatible)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import typing

import sprockets_statsd
from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import _extras, app, daemon, logs
from sprockets_statsd.server._aggregatorconfig import AggregatorConfig
from sprockets_statsd.server._options import (
    AGGREGATOR_FIELDS,
    FALSE,
    OFF,
    TRUE,
    Option,
    log_level,
    number,
    options,
    parse_address,
)
from sprockets_statsd.server.config import ServerConfig

__all__ = ['build_parser', 'main', 'parse_address', 'settings_from']

logger = logging.getLogger(__name__)

class _Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, without the long usage text."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with each option's variable in its help."""
    parser = _Parser(
        prog='sprockets-statsd-server',
        description='Receive statsd metrics over UDP, TCP and Unix sockets, '
        'aggregate them like etsy statsd and flush them to Graphite.',
        epilog='Every option can also be set with the environment variable '
        'shown; the command line wins.  Several values in one variable are '
        'separated by commas (histograms: by semicolons).',
    )
    parser.add_argument(
        '--version', action='version',
        version=f'%(prog)s {sprockets_statsd.__version__}',
    )
    parser.add_argument(
        '-v', '--verbose', action='count', dest='verbose', default=None,
        help='log more: once for INFO, twice for DEBUG (default WARNING) '
        '[env: STATSD_LOG_LEVEL=debug|info|warning|error]',
    )
    # Frames shorter than a minute only make sense in tests: not in --help.
    parser.add_argument(
        '--load-frame-length', dest='frame_length', default=None,
        type=number(0, above=True), help=argparse.SUPPRESS,
    )
    for option in options():
        text = f'{option.help} [env: {option.env}]'
        if option.switch:
            parser.add_argument(
                *option.flags, dest=option.dest, default=None, help=text,
                action=argparse.BooleanOptionalAction,
            )
        else:
            parser.add_argument(
                *option.flags, dest=option.dest, default=None, help=text,
                type=option.convert, metavar=option.metavar,
                action='append' if option.repeat else 'store',
            )
    return parser


def _from_environment(
    parser: argparse.ArgumentParser,
    option: Option,
    raw: str,
) -> typing.Any:
    try:
        if option.switch:
            word = raw.strip().lower()
            if word not in TRUE | FALSE:
                raise argparse.ArgumentTypeError(
                    f'{raw!r}: expected true or false'
                )
            return word in TRUE
        if option.repeat:
            return [
                option.convert(part.strip())
                for part in raw.split(option.repeat)
                if part.strip()
            ]
        return option.convert(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f'environment variable {option.env}: {exc}')


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the command line and environment say.

    :param config: the server's configuration
    :param level: the root logger's level
    :param daemonize: detach from the terminal (``-D``)
    :param pidfile: the pid file (``--pidfile``)
    :param log_file: the log file, instead of standard error (``--log-file``)
    :param log_format: ``'logfmt'`` or ``'json'`` (``--log-format``)
    """

    config: ServerConfig
    level: int
    daemonize: bool = False
    pidfile: str | None = None
    log_file: str | None = None
    log_format: str = 'logfmt'


#: Options about the process, not the server: they go to :class:`Settings`.
_PROCESS_FIELDS = ('daemonize', 'pidfile', 'log_file', 'log_format')


def settings_from(
    argv: typing.Sequence[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> tuple[ServerConfig, int]:
    """Build the server's configuration from arguments and environment.

    :param argv: the arguments (default ``sys.argv[1:]``)
    :param environ: the environment (default ``os.environ``)
    :returns: the configuration and the log level
    :raises SystemExit: with status 2 and a one-line message on a bad value
    """
    settings = parse_settings(argv, environ)
    return settings.config, settings.level


def parse_settings(
    argv: typing.Sequence[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
) -> Settings:
    """Build every setting from arguments and environment.

    :param argv: the arguments (default ``sys.argv[1:]``)
    :param environ: the environment (default ``os.environ``)
    :raises SystemExit: with status 2 and a one-line message on a bad value
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, typing.Any] = {}
    for option in options():
        value = getattr(args, option.dest)
        if value is None and environ.get(option.env, '').strip():
            value = _from_environment(parser, option, environ[option.env])
        if value is not None:
            values[option.dest] = value
    if args.verbose is not None:
        level = max(logging.DEBUG, logging.WARNING - 10 * args.verbose)
    elif environ.get('STATSD_LOG_LEVEL', '').strip():
        try:
            level = log_level(environ['STATSD_LOG_LEVEL'])
        except argparse.ArgumentTypeError as exc:
            parser.error(f'environment variable STATSD_LOG_LEVEL: {exc}')
    else:
        level = logging.WARNING
    process = {k: values.pop(k) for k in _PROCESS_FIELDS if k in values}
    for field in ('unix_socket', 'unix_datagram'):
        if field in values:
            # A daemon changes to /: resolve the path against where it started.
            values[field] = os.path.abspath(values[field])
    _sinks_and_endpoints(parser, values)
    if args.frame_length is not None:
        values['frame_length'] = args.frame_length
    aggregator = {k: values.pop(k) for k in list(values) if k in AGGREGATOR_FIELDS}
    for name in ('percent_thresholds', 'histograms'):
        if name in aggregator:
            aggregator[name] = tuple(aggregator[name])
    if 'bind' in values:
        values['binds'] = tuple(values.pop('bind'))
    if 'repeat' in values:
        values['repeat'] = tuple(values['repeat'])
    try:
        config = ServerConfig(aggregator=AggregatorConfig(**aggregator), **values)
    except ConfigurationError as exc:  # pragma: no cover - checked per option
        parser.error(str(exc))
    try:
        # Surfaces asked for explicitly: their extra must be installed.
        if config.load_sinks:
            _extras.require('the load sink (--http, -t load)', 'sprockets_statsd.server.http')
        if process.get('daemonize'):
            _extras.require('--daemonize', 'daemon')
    except ConfigurationError as exc:
        parser.exit(2, f'{parser.prog}: error: {exc}\n')
    return Settings(config, level, **process)


def _sinks_and_endpoints(
    parser: argparse.ArgumentParser, values: dict[str, typing.Any]
) -> None:
    """Turn -s, -t, --http and --admin into :class:`.ServerConfig` fields.

    ``-t`` applies to every ``-s`` wherever it stands, as with gstatsd; a
    mix of Graphite and load sinks is written with ``-s`` and ``--http``.
    """
    types = set(values.pop('sink_type', ()))
    if len(types) > 1:
        parser.error(
            'argument -t/--type: graphite and load both given, but the type '
            'applies to every -s; give load sinks with --http [HOST]:PORT'
        )
    sinks = tuple(values.pop('sink', ()))
    if sinks:
        values['load_sinks' if types == {'load'} else 'sinks'] = sinks
    http = values.pop('http', [])
    if OFF in http:
        if len(http) > 1:
            parser.error('argument --http: "off" cannot be combined with addresses')
        values['default_load_sink'] = None
    elif http:
        values['load_sinks'] = values.get('load_sinks', ()) + tuple(http)
    admin = values.pop('admin', None)
    if admin == OFF:
        values['default_admin'] = None
    elif admin is not None:
        values['admin'] = admin


async def _serve(config: ServerConfig) -> int:
    loop = asyncio.get_running_loop()
    server = app.Server(config)
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            logger.info('already stopping (at most %g s)', config.shutdown_timeout)
            return
        logger.info('%s received: flushing and stopping',
                    signal.Signals(signum).name)
        stop.set()

    # Handlers go in before the sockets are bound: a signal that arrives
    # during start-up must stop the server, not be lost (a process started
    # in the background of a shell inherits an ignored SIGINT).
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, on_signal, signum)
    try:
        await server.start()
    except OSError as exc:
        logger.error('%s', exc)
        return 1
    logger.info('sprockets-statsd-server %s', server.describe())
    try:
        await stop.wait()
    finally:
        await server.stop()
    logger.info('stopped')
    return 0


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; return the exit status.

    :param argv: the arguments (default ``sys.argv[1:]``)
    """
    settings = parse_settings(argv)
    try:
        logs.configure_logging(settings.level, settings.log_file,
                               log_format=settings.log_format)
    except ConfigurationError as exc:
        print(f'sprockets-statsd-server: error: {exc}', file=sys.stderr)
        return 1
    # Where the server listens is worth saying even when only warnings are
    # shown: this module's own lines are few and always wanted.
    logger.setLevel(min(settings.level, logging.INFO))
    try:
        return daemon.run(lambda: _serve(settings.config),
                          daemonize=settings.daemonize, pidfile=settings.pidfile)
    except (daemon.PidFileError, ConfigurationError) as exc:
        # Raised before detaching: the terminal still shows it.
        print(f'sprockets-statsd-server: error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - only where signals lack
        return 0
