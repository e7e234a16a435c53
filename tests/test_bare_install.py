"""The package installed without extras (``pip install sprockets-statsd``), in a fresh venv.

One venv serves the module: created without pip (and without the system's
packages, so Debian's Tornado cannot leak in), the checkout's package
installed into it by this interpreter's pip.  The server then runs from it as
a real process: it receives, aggregates and flushes to standard output, and
every surface that needs the ``server`` extra says in one line what to
install.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.server.helpers import DEFAULT_TIMEOUT, ServerProcess, send_udp

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Creating the venv and installing into it (pip builds the wheel).
INSTALL_TIMEOUT = 180
INSTALL = "pip install 'sprockets-statsd[server]'"
#: The optional dependencies: none may be importable in the bare venv.
EXTRAS = ('tornado', 'prometheus_client', 'daemon')

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def bare(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A venv with the package installed without extras; returns its python."""
    root = tmp_path_factory.mktemp('bare')
    # Only what the build needs: the checkout's build/ and egg-info stay put.
    source = root / 'source'
    source.mkdir()
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / 'sprockets_statsd', source / 'sprockets_statsd',
                    ignore=shutil.ignore_patterns('__pycache__'))
    venv = root / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)],
                   check=True, timeout=INSTALL_TIMEOUT)
    python = venv / 'bin' / 'python'
    done = subprocess.run(
        [sys.executable, '-m', 'pip', '--python', str(python), 'install', '--quiet',
         '--disable-pip-version-check', str(source)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
    )
    assert done.returncode == 0, f'pip install failed:\n{done.stdout}\n{done.stderr}'
    return python


def run_python(python: pathlib.Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` with `python` outside the checkout, so only the installed package counts."""
    return subprocess.run([str(python), '-c', code], capture_output=True, text=True,
                          timeout=DEFAULT_TIMEOUT * 6, check=False, cwd=python.parent,
                          env=_environment())


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ('PYTHONPATH', 'PYTHONHOME') and not k.startswith('STATSD_')}


def test_the_venv_has_no_extras(bare: pathlib.Path) -> None:
    """The venv really lacks Tornado, prometheus_client and python-daemon, and
    holds the installed package rather than the checkout."""
    done = run_python(bare, (
        'import importlib.util, pathlib, sprockets_statsd\n'
        f'print([m for m in {EXTRAS!r} if importlib.util.find_spec(m)])\n'
        'print(pathlib.Path(sprockets_statsd.__file__).parent.parent.name)\n'
    ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['[]', 'site-packages']


def test_server_modules_import_without_extras(bare: pathlib.Path) -> None:
    """The server package and its pure modules import without any extra, and
    importing them loads none."""
    modules = ('sprockets_statsd.server', 'sprockets_statsd.server.parser',
               'sprockets_statsd.server.aggregator', 'sprockets_statsd.server.graphite',
               'sprockets_statsd.server.config', 'sprockets_statsd.server.cli',
               'sprockets_statsd.server.app', 'sprockets_statsd.server.sinks',
               'sprockets_statsd.server.listeners', 'sprockets_statsd.server.admin')
    done = run_python(bare, (
        'import importlib, sys\n'
        f'for name in {modules!r}:\n'
        '    importlib.import_module(name)\n'
        f'print(sorted(m for m in {EXTRAS!r} if m in sys.modules))\n'
        'from sprockets_statsd.server.parser import parse_line\n'
        "print(parse_line(b'a:1|c'))\n"
    ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        '[]', "[Sample(key='a', kind='c', value=1.0, rate=1.0, delta=False)]"]


async def test_server_receives_aggregates_and_flushes_to_stdout(bare: pathlib.Path) -> None:
    """With no extras the server starts (one line says the default load sink
    needs the extra), counts a UDP counter and flushes it to standard output."""
    server = ServerProcess('-b', '127.0.0.1:0', '-f', '0.2', '--admin', 'off',
                           python=str(bare), cwd=str(bare.parent))
    server.env = _environment()
    async with server:
        send_udp(server.address, b'bare.count:3|c')
        assert server.process is not None
        assert server.process.stdout is not None
        seen: list[str] = []
        while 'stats_counts.bare.count 3 ' not in ''.join(seen):
            line = await asyncio.wait_for(server.process.stdout.readline(), DEFAULT_TIMEOUT)
            assert line, f'stdout closed before the counter was flushed: {seen}'
            seen.append(line.decode())
        status, _, stderr = await server.stop()
    assert status == 0, stderr
    assert 'Traceback' not in stderr
    notes = [line for line in stderr.splitlines() if INSTALL in line]
    assert len(notes) == 1, stderr
    assert 'the load sink needs tornado' in notes[0]


@pytest.mark.parametrize(('args', 'surface'), [
    (('--http', '127.0.0.1:0'), 'the load sink'),
    (('-s', '127.0.0.1:8082', '-t', 'load'), 'the load sink'),
    (('-D', '--log-file', 'statsd.log'), '--daemonize needs python-daemon'),
])
def test_surfaces_that_need_the_extra_say_so_in_one_line(
    bare: pathlib.Path, tmp_path: pathlib.Path, args: tuple[str, ...], surface: str
) -> None:
    """--http, -t load and -D exit with status 2 and one line naming the extra,
    before binding anything and without a traceback."""
    done = subprocess.run(
        [str(bare), '-m', 'sprockets_statsd.server', '-b', '127.0.0.1:0', *args],
        capture_output=True, text=True, timeout=DEFAULT_TIMEOUT * 6, check=False,
        cwd=tmp_path, env=_environment(),
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ''
    [line] = done.stderr.splitlines()
    assert line.startswith('sprockets-statsd-server: error: ')
    assert surface in line
    assert line.endswith(INSTALL)


def test_synchronous_client_does_not_import_asyncio(bare: pathlib.Path) -> None:
    """``from sprockets_statsd.client import StatsClient`` loads neither asyncio
    nor any extra, and the client sends."""
    done = run_python(bare, (
        'import sys\n'
        'from sprockets_statsd.client import StatsClient\n'
        "print(sorted(m for m in ('asyncio', *" + repr(EXTRAS) + ") if m in sys.modules))\n"
        "StatsClient('127.0.0.1', 9).incr('bare')\n"
    ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['[]']
