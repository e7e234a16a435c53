"""Structured log lines, configure_logging and the reopenable log file."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import sys

import pytest

from sprockets_statsd.errors import ConfigurationError
from sprockets_statsd.server import logs

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """Read one logfmt line back into its fields (quoted values unescaped)."""
    fields = {}
    for key, value in _PAIR.findall(line):
        fields[key] = json.loads(value) if value.startswith('"') else value
    assert ' '.join(f'{k}={v}' for k, v in _PAIR.findall(line)) == line, line
    return fields


def make_record(msg: str = 'hello', *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord('sprockets_statsd.test', logging.WARNING, __file__, 1,
                               msg, args, None)
    record.created = 1_700_000_000.25
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_logfmt_plain_fields() -> None:
    """A record becomes time, level, logger, pid and msg, in that order."""
    line = logs.LogfmtFormatter().format(make_record('flushed %d names', 3))
    assert line == (f'time=2023-11-14T22:13:20.250Z level=warning '
                    f'logger=sprockets_statsd.test pid={os.getpid()} '
                    f'msg="flushed 3 names"')
    assert parse_logfmt(line)['msg'] == 'flushed 3 names'


@pytest.mark.parametrize('value', [
    '', 'two words', 'a=b', 'say "hi"', 'back\\slash', 'line\nbreak', 'tab\there',
    'caf\u00e9 \u2603', '\x1b[31mred',
])
def test_logfmt_quotes_what_needs_it(value: str) -> None:
    """Values that would be ambiguous or break the line are quoted and read
    back exactly; the line never contains a newline or raw control byte."""
    line = logs.LogfmtFormatter().format(make_record('m', path=value))
    assert '\n' not in line
    assert '\x1b' not in line
    assert parse_logfmt(line)['path'] == value


def test_logfmt_simple_values_stay_bare() -> None:
    """Extra fields without special characters are written unquoted."""
    line = logs.LogfmtFormatter().format(make_record('m', port=8125, host='127.0.0.1'))
    assert line.endswith('msg=m port=8125 host=127.0.0.1')


def test_exceptions_stay_on_one_line() -> None:
    """A traceback is one escaped field, so a record is still one line."""
    try:
        raise ValueError('boom')
    except ValueError:
        record = logging.LogRecord('x', logging.ERROR, __file__, 1, 'failed', (),
                                   sys.exc_info())
    for formatter in (logs.LogfmtFormatter(), logs.JSONFormatter()):
        line = formatter.format(record)
        assert '\n' not in line
    fields = parse_logfmt(logs.LogfmtFormatter().format(record))
    assert fields['exc'].startswith('Traceback (most recent call last):\n')
    assert fields['exc'].endswith('ValueError: boom')


def test_json_lines() -> None:
    """The JSON format is one object per record with the same fields; values
    JSON cannot hold are written as their str()."""
    line = logs.JSONFormatter().format(make_record('m %s', 'x', size=3, where=pathlib.Path('/a')))
    assert '\n' not in line
    assert json.loads(line) == {
        'time': '2023-11-14T22:13:20.250Z', 'level': 'warning',
        'logger': 'sprockets_statsd.test', 'pid': os.getpid(), 'msg': 'm x',
        'size': 3, 'where': '/a',
    }


def test_configure_logging_stream(root_logging: logging.Logger,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Without a file, records go to standard error as logfmt; configuring
    again replaces the handler instead of doubling the lines."""
    logs.configure_logging(logging.INFO)
    handler = logs.configure_logging(logging.INFO, log_format='json')
    assert root_logging.level == logging.INFO
    ours = [h for h in root_logging.handlers
            if isinstance(h.formatter, (logs.LogfmtFormatter, logs.JSONFormatter))]
    assert ours == [handler]
    logging.getLogger('sprockets_statsd.test').info('once', extra={'n': 1})
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert json.loads(err)['msg'] == 'once'
    assert json.loads(err)['n'] == 1


def test_configure_logging_rejects_bad_settings(root_logging: logging.Logger,
                                                tmp_path: pathlib.Path) -> None:
    """An unknown format and a log file that cannot be opened are
    configuration errors naming what to fix; the old handlers stay."""
    before = list(root_logging.handlers)
    with pytest.raises(ConfigurationError, match=r"log format 'xml': use one of logfmt, json"):
        logs.configure_logging(logging.INFO, log_format='xml')
    missing = tmp_path / 'no' / 'such' / 'dir' / 'statsd.log'
    with pytest.raises(ConfigurationError, match=r'cannot be opened for appending.*--log-file') as exc:
        logs.configure_logging(logging.INFO, str(missing))
    assert str(missing) in str(exc.value)
    assert root_logging.handlers == before


def test_log_file_reopened_after_rename(root_logging: logging.Logger,
                                        tmp_path: pathlib.Path) -> None:
    """After a rename, records go to the renamed file until reopen_log_files
    is called; then a new file of the original name gets them."""
    path = tmp_path / 'statsd.log'
    logs.configure_logging(logging.INFO, str(path))
    log = logging.getLogger('sprockets_statsd.test')
    log.info('first')
    path.rename(tmp_path / 'statsd.log.1')
    log.info('second')
    assert logs.reopen_log_files() == 1
    log.info('third')
    old = [parse_logfmt(line)['msg'] for line in (tmp_path / 'statsd.log.1').read_text().splitlines()]
    new = [parse_logfmt(line)['msg'] for line in path.read_text().splitlines()]
    assert old == ['first', 'second']
    assert new == ['third']


def test_reopen_failure_keeps_the_old_file(root_logging: logging.Logger,
                                           tmp_path: pathlib.Path) -> None:
    """When the name cannot be opened any more, the handler keeps its old
    file and says so there; the count of reopened files is 0."""
    directory = tmp_path / 'logs'
    directory.mkdir()
    path = directory / 'statsd.log'
    logs.configure_logging(logging.INFO, str(path))
    moved = tmp_path / 'moved'
    directory.rename(moved)
    assert logs.reopen_log_files() == 0
    logging.getLogger('sprockets_statsd.test').info('still here')
    lines = [parse_logfmt(line) for line in (moved / 'statsd.log').read_text().splitlines()]
    assert lines[0]['msg'] == 'cannot reopen the log file, still writing to the old one'
    assert lines[0]['path'] == str(path)
    assert lines[0]['level'] == 'error'
    assert lines[1]['msg'] == 'still here'
