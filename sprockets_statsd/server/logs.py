"""The server's structured one-line log output and its reopenable log file."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import typing

from sprockets_statsd.errors import ConfigurationError

__all__ = [
    'LOG_FORMATS',
    'JSONFormatter',
    'LogfmtFormatter',
    'ReopenableFileHandler',
    'configure_logging',
    'reopen_log_files',
]

logger = logging.getLogger(__name__)

#: The attributes every :class:`logging.LogRecord` has; anything else on a
#: record came from ``extra=`` and is written as a field of its own.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord('', 0, '', 0, '', (), None))
) | {'message', 'asctime', 'taskName'}

#: Characters that make a logfmt value need quotes (besides unprintable ones).
_NEEDS_QUOTES = frozenset(' ="\\')

#: Marks the handlers :func:`configure_logging` installed, so that calling it
#: again replaces them instead of doubling every line.
_OWNED = '_sprockets_statsd_handler'


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
    return moment.isoformat(timespec='milliseconds').replace('+00:00', 'Z')


class _FieldFormatter(logging.Formatter):
    """Turns a record into ordered ``(key, value)`` fields."""

    def fields(self, record: logging.LogRecord) -> list[tuple[str, object]]:
        """The record's fields: time, level, logger, pid, msg, extras, exc.

        :param record: the record to describe
        """
        fields: list[tuple[str, object]] = [
            ('time', _timestamp(record)),
            ('level', record.levelname.lower()),
            ('logger', record.name),
            ('pid', record.process),
            ('msg', record.getMessage()),
        ]
        fields.extend(
            (key, value)
            for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith('_')
        )
        if record.exc_info and not record.exc_text:
            # Cached on the record, as logging.Formatter does, so that other
            # handlers do not format the same traceback again.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            fields.append(('exc', record.exc_text))
        if record.stack_info:
            fields.append(('stack', self.formatStack(record.stack_info)))
        return fields


class LogfmtFormatter(_FieldFormatter):
    """Formats a record as one line of ``key=value`` pairs (logfmt).

    A value with a space, ``=``, a quote, a backslash or an unprintable
    character (a newline in a traceback, say) is written as a JSON string,
    so every record stays on one line and reads back unambiguously::

        time=2024-05-01T12:00:00.250Z level=info logger=sprockets_statsd.server.app
        pid=812 msg="statsd server stopped"
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one logfmt line.

        :param record: the record to render
        """
        return ' '.join(
            f'{key}={self.quote(value)}' for key, value in self.fields(record)
        )

    @staticmethod
    def quote(value: object) -> str:
        """Render one value, quoted when it needs to be.

        :param value: any value; non-strings are rendered with :func:`str`
        """
        text = value if isinstance(value, str) else str(value)
        if not text or not text.isprintable() or not _NEEDS_QUOTES.isdisjoint(text):
            return json.dumps(text, ensure_ascii=False)
        return text


class JSONFormatter(_FieldFormatter):
    """Formats a record as one JSON object per line (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a JSON object on one line.

        :param record: the record to render
        """
        # Values json cannot encode (an object passed in extra=) become their
        # str() rather than failing the log call.
        return json.dumps(dict(self.fields(record)), default=str, ensure_ascii=False)


#: The accepted values of :func:`configure_logging`'s `log_format`.
LOG_FORMATS: dict[str, type[logging.Formatter]] = {
    'logfmt': LogfmtFormatter,
    'json': JSONFormatter,
}


class ReopenableFileHandler(logging.FileHandler):
    """Appends to a log file and reopens it by name on request.

    :param filename: the log file; relative paths are made absolute now, so
        that a daemon's change of directory does not move it
    :raises OSError: when the file cannot be opened for appending

    After logrotate (or an operator) renames the file, :meth:`reopen`
    (called on SIGHUP) makes the handler write to a new file of the old
    name.  Records are never lost or split: the switch happens under the
    handler's lock.
    """

    def __init__(self, filename: str) -> None:
        super().__init__(filename, mode='a', encoding='utf-8', delay=False)

    def reopen(self) -> None:
        """Close the current file and open the file of the same name.

        :raises OSError: when the name cannot be opened; the handler then
            keeps writing to the file it had
        """
        self.acquire()
        try:
            stream = self._open()
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


def reopen_log_files() -> int:
    """Reopen every :class:`ReopenableFileHandler` of the root logger.

    Returns how many were reopened.  A file that cannot be reopened is
    logged (to its old file) and kept; the others are still reopened.
    """
    reopened = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            try:
                handler.reopen()
            except OSError as exc:
                logger.error('cannot reopen the log file, still writing to the old one',
                             extra={'path': handler.baseFilename, 'error': str(exc)})
            else:
                reopened += 1
    return reopened


def configure_logging(
    level: int,
    log_file: str | None = None,
    *,
    log_format: str = 'logfmt',
    stream: typing.TextIO | None = None,
) -> logging.Handler:
    """Send the server's log records, one line each, to stderr or a file.

    :param level: the root logger's level (``logging.WARNING`` …)
    :param log_file: append to this file instead of writing to `stream`;
        it is opened now, so a bad path fails before the server starts
    :param log_format: ``'logfmt'`` (``key=value`` pairs) or ``'json'``
    :param stream: where records go without a log file (default: standard
        error, which journald collects under systemd)
    :raises ConfigurationError: when `log_format` is unknown or `log_file`
        cannot be opened for appending
    :returns: the handler installed on the root logger

    Calling it again replaces the handler it installed before; handlers
    installed by anything else are left alone.
    """
    try:
        formatter = LOG_FORMATS[log_format]()
    except KeyError:
        raise ConfigurationError(
            f'log format {log_format!r}: use one of {", ".join(LOG_FORMATS)}'
        ) from None
    handler: logging.Handler
    if log_file is not None:
        try:
            handler = ReopenableFileHandler(log_file)
        except OSError as exc:
            raise ConfigurationError(
                f'log file {os.path.abspath(log_file)!r} cannot be opened for '
                f'appending ({exc.strerror or exc}): create its directory or '
                'choose another --log-file'
            ) from None
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _OWNED, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _OWNED, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
