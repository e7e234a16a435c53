"""The Debian package: built by packaging/build-deb.sh, checked file by file.

One build serves every test of this module (about 15 s); lintian runs on
its result.  The build needs Debian 12 (bookworm) or later with the build
dependencies of debian/control; as root the script installs missing ones,
otherwise the test fails with the apt-get line to run.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import subprocess
import sys
import typing

import pytest

import sprockets_statsd

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / 'packaging' / 'build-deb.sh'

#: The build, lintian and the checks must stay well inside CI's budget.
BUILD_TIMEOUT = 150
TOOL_TIMEOUT = 60

APT_LINE = ('apt-get install -y --no-install-recommends build-essential debhelper dh-python '
            'pybuild-plugin-pyproject python3-all python3-setuptools python3-wheel '
            'python3-daemon python3-tornado python3-prometheus-client lintian')

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Built:
    """The package that build-deb.sh produced, unpacked."""

    deb: pathlib.Path
    changes: pathlib.Path
    tree: pathlib.Path
    control: pathlib.Path
    listing: frozenset[str]
    info: str

    def field(self, name: str) -> str:
        match = re.search(rf'^ {name}: (.*)$', self.info, re.MULTILINE)
        assert match, f'no {name} field in:\n{self.info}'
        return match[1]


def run(*command: str | pathlib.Path, timeout: float = TOOL_TIMEOUT) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, (
        f'{" ".join(map(str, command))} exited with {done.returncode}:\n'
        f'{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    )
    return done.stdout


@pytest.fixture(scope='module')
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build the package once (into a temporary directory) and unpack it."""
    missing = [tool for tool in ('dpkg-buildpackage', 'dpkg-deb', 'lintian')
               if shutil.which(tool) is None]
    if missing:
        pytest.fail(f'{", ".join(missing)} not found: the packaging test needs Debian 12 '
                    f'or later with the build tools; as root run\n  apt-get update && {APT_LINE}')
    out = tmp_path_factory.mktemp('deb')
    done = subprocess.run(['bash', str(BUILD_SCRIPT), '--output-dir', str(out)],
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode != 0:
        pytest.fail(f'packaging/build-deb.sh failed ({done.returncode}); its last output:\n'
                    f'{done.stderr[-4000:]}', pytrace=False)
    deb = pathlib.Path(done.stdout.splitlines()[-1])
    assert deb.parent == out
    assert deb.is_file()
    tree, control = out / 'tree', out / 'control'
    run('dpkg-deb', '-x', deb, tree)
    run('dpkg-deb', '-e', deb, control)
    listing = frozenset(
        line.split(None, 5)[5].removeprefix('./').split(' -> ')[0]
        for line in run('dpkg-deb', '-c', deb).splitlines()
    )
    return Built(deb, next(out.glob('*.changes')), tree, control, listing,
                 run('dpkg-deb', '-I', deb))


def debian_version(version: str) -> str:
    """PEP 440 pre-releases sort before the release in Debian with a '~'."""
    return re.sub(r'\.?(dev|a|b|rc)(\d+)', r'~\1\2', version)


def unit_file(built: Built) -> pathlib.Path:
    # bookworm installs units to /lib, later releases to /usr/lib.
    for prefix in ('lib', 'usr/lib'):
        path = built.tree / prefix / 'systemd' / 'system' / 'sprockets-statsd.service'
        if path.exists():
            return path
    raise AssertionError(f'no sprockets-statsd.service in {sorted(built.listing)}')


def directives(path: pathlib.Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order of appearance."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if '=' in line and not line.startswith(('#', ';', '[')):
            key, _, value = line.partition('=')
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def server_variables() -> set[str]:
    """The STATSD_* variables the server's --help names."""
    text = subprocess.run([sys.executable, '-m', 'sprockets_statsd.server', '--help'],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          check=True).stdout
    return set(re.findall(r'\bSTATSD_[A-Z_]+', text))


def test_control_fields(built: Built) -> None:
    """The package is the current version, for every architecture, and
    depends on Debian's python3 and the server's libraries."""
    assert built.field('Package') == 'sprockets-statsd'
    assert built.field('Version') == debian_version(sprockets_statsd.__version__)
    assert built.field('Architecture') == 'all'
    depends = {d.strip() for d in built.field('Depends').split(',')}
    assert {'python3-daemon', 'python3-tornado', 'python3-prometheus-client'} <= depends
    assert any(d.startswith('python3:any') or d.startswith('python3 (') for d in depends)
    assert 'systemd | systemd-standalone-sysusers | systemd-sysusers' in depends


def test_python_package_complete(built: Built) -> None:
    """Every module of the checkout is installed for Debian's python3, with
    py.typed and the console script's entry point."""
    site = 'usr/lib/python3/dist-packages/'
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / 'sprockets_statsd').rglob('*.py')}
    assert modules
    assert {site + m for m in modules} <= built.listing, modules
    assert site + 'sprockets_statsd/py.typed' in built.listing
    entry_points = next((built.tree / site).glob('sprockets_statsd-*.dist-info/entry_points.txt'))
    assert 'sprockets-statsd-server = sprockets_statsd.server.cli:main' in entry_points.read_text()


def test_command_runs_with_debian_python(built: Built) -> None:
    """/usr/bin/sprockets-statsd-server is a script for /usr/bin/python3,
    and the packaged module runs there and reports the version."""
    script = built.tree / 'usr/bin/sprockets-statsd-server'
    assert script.read_text().startswith('#!/usr/bin/python3\n')
    assert script.stat().st_mode & 0o111
    site = built.tree / 'usr/lib/python3/dist-packages'
    done = subprocess.run(['/usr/bin/python3', '-s', '-c',
                           f'import sys; sys.path.insert(0, {str(site)!r}); '
                           'from sprockets_statsd.server.cli import main; '
                           'sys.argv[0] = "sprockets-statsd-server"; main(["--version"])'],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                          check=False, cwd='/')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f'sprockets-statsd-server {sprockets_statsd.__version__}'


def test_systemd_unit(built: Built) -> None:
    """The unit runs the command in the foreground as _statsd with the
    defaults file, restarts on failure and is hardened."""
    unit = directives(unit_file(built))
    assert unit['ExecStart'] == ['/usr/bin/sprockets-statsd-server $STATSD_OPTS']
    assert 'usr/bin/sprockets-statsd-server' in built.listing
    assert unit['EnvironmentFile'] == ['-/etc/default/sprockets-statsd']
    assert unit['User'] == unit['Group'] == ['_statsd']
    assert unit['Restart'] == ['on-failure']
    assert unit['Type'] == ['exec']
    for key in ('NoNewPrivileges', 'ProtectHome', 'PrivateTmp', 'PrivateDevices',
                'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups',
                'RestrictNamespaces', 'RestrictSUIDSGID', 'LockPersonality'):
        assert unit[key] == ['yes'], key
    assert unit['ProtectSystem'] == ['strict']
    assert unit['RestrictAddressFamilies'] == ['AF_INET AF_INET6 AF_UNIX']
    assert unit['CapabilityBoundingSet'] == ['']
    assert unit['WantedBy'] == ['multi-user.target']
    assert not any(a in unit['ExecStart'][0] for a in ('-D', '--daemonize'))


def test_system_user(built: Built) -> None:
    """The _statsd user is declared for systemd-sysusers, which the
    postinst runs."""
    sysusers = (built.tree / 'usr/lib/sysusers.d/sprockets-statsd.conf').read_text()
    assert re.search(r'^u _statsd - ".*" /nonexistent /usr/sbin/nologin$', sysusers, re.MULTILINE)
    postinst = (built.control / 'postinst').read_text()
    assert 'systemd-sysusers' in postinst
    assert 'sprockets-statsd.conf' in postinst


def test_defaults_file(built: Built) -> None:
    """/etc/default/sprockets-statsd is a conffile and only names variables
    the server reads; it binds loopback and feeds a local carbon."""
    assert (built.control / 'conffiles').read_text().split() == ['/etc/default/sprockets-statsd']
    text = (built.tree / 'etc/default/sprockets-statsd').read_text()
    named = set(re.findall(r'\bSTATSD_[A-Z_]+', text)) - {'STATSD_OPTS'}
    known = server_variables()
    assert named <= known, named - known
    active = dict(line.split('=', 1) for line in text.splitlines()
                  if line and not line.startswith('#'))
    assert active == {'STATSD_BIND': '127.0.0.1:8125', 'STATSD_SINK': '127.0.0.1:2003'}


def test_documentation(built: Built) -> None:
    """The copyright file, changelog and a man page for the command ship."""
    for path in ('usr/share/doc/sprockets-statsd/copyright',
                 'usr/share/doc/sprockets-statsd/changelog.gz',
                 'usr/share/man/man1/sprockets-statsd-server.1.gz'):
        assert path in built.listing, path


def test_lintian(built: Built) -> None:
    """lintian reports no error or warning (remaining tags are overridden
    with the reason in debian/sprockets-statsd.lintian-overrides)."""
    done = subprocess.run(['lintian', '--fail-on', 'error,warning', str(built.changes)],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    tags = [line for line in done.stdout.splitlines() if re.match(r'[EW]: ', line)]
    assert not tags, done.stdout
    assert done.returncode == 0, f'{done.stdout}\n{done.stderr}'


def test_repository_left_clean(built: Built) -> None:
    """The build ran out of tree: nothing under debian/ or .pybuild was
    created in the checkout."""
    leftovers: typing.Iterable[pathlib.Path] = [
        ROOT / '.pybuild', ROOT / 'debian' / 'sprockets-statsd', ROOT / 'debian' / 'files',
        ROOT / 'debian' / '.debhelper', ROOT / 'debian' / 'debhelper-build-stamp',
    ]
    assert [p for p in leftovers if p.exists()] == []


def test_test_script_installs_the_build_dependencies() -> None:
    """scripts/test's list of system packages holds every Build-Depends of debian/control.

    The packaging tests then find their tools on a fresh machine; a build
    dependency added to debian/control alone fails here.
    """
    script = (ROOT / 'scripts' / 'test').read_text()
    listed = re.search(r'^system_packages=\((.*?)^\)', script, re.MULTILINE | re.DOTALL)
    assert listed, 'no system_packages=( ... ) list in scripts/test'
    packages = set(re.sub(r'#.*', '', listed[1]).split())
    control = (ROOT / 'debian' / 'control').read_text()
    field = re.search(r'^Build-Depends:(.*?)^\S', control, re.MULTILINE | re.DOTALL)
    assert field, 'no Build-Depends in debian/control'
    needed = set()
    for relation in field[1].split(','):
        name = relation.split()[0] if relation.split() else ''
        # debhelper-compat and the dh-sequence-* names are provided by debhelper.
        if name.startswith(('debhelper-compat', 'dh-sequence-')):
            name = 'debhelper'
        if name:
            needed.add(name)
    assert needed <= packages, f'scripts/test does not install {sorted(needed - packages)}'
    assert {'dpkg-dev', 'lintian', 'build-essential'} <= packages
