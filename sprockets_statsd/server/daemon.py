"""Run the server in the foreground or as a daemon, with a pid file and SIGHUP."""

# Strategy: everything that can fail for a reason the operator must fix (the
# pid file is held by a running server, its directory is missing, the log
# file cannot be opened) is checked in the original process, while its
# standard error still reaches the terminal.  Only then does python-daemon
# detach; the pid file's lock is taken before the fork and stays held by the
# daemon, because an flock belongs to the open file, which the daemon
# inherits.  The lock, not the pid written in the file, says whether a
# server is running, so a file left behind by a killed server is recognised
# as stale even when its pid was reused by another process.

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import sys
import typing

from sprockets_statsd.errors import StatsdError
from sprockets_statsd.server import logs
from sprockets_statsd.server._extras import needs_extra

__all__ = ['PidFile', 'PidFileError', 'run']

logger = logging.getLogger(__name__)

#: Attempts at locking the pid file when it is replaced under us (a server
#: that is stopping removes it between our open and our lock).
_LOCK_ATTEMPTS = 5


class PidFileError(StatsdError):
    """The pid file is held by a running server or cannot be used."""


class PidFile:
    """A pid file, locked (``flock``) for as long as the server runs.

    :param path: where to write the pid; made absolute now, so that a
        daemon's change of directory does not move it

    :meth:`acquire` takes the lock (failing when another server holds it),
    :meth:`write` records the current process's pid, :meth:`release`
    removes the file and drops the lock.  As a context manager it does all
    three.  A file whose lock nobody holds was left by a server that died
    without cleaning up: it is taken over and its old pid logged.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._fd: int | None = None
        self._owner: int | None = None
        #: The pid read from a stale file when it was taken over.
        self.stale_pid: int | None = None

    def fileno(self) -> int:
        """The locked file's descriptor (to keep it open across a fork).

        :raises RuntimeError: when the lock is not held
        """
        if self._fd is None:
            raise RuntimeError(f'pid file {self.path} is not locked')
        return self._fd

    def acquire(self) -> None:
        """Open and lock the pid file, without blocking.

        :raises PidFileError: when another process holds the lock, or the
            file cannot be created
        """
        if self._fd is not None:
            return
        for _ in range(_LOCK_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise PidFileError(
                    f'pid file {self.path} cannot be created ({exc.strerror}): '
                    'create its directory, writable by this user, or choose '
                    'another --pidfile'
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise PidFileError(f'pid file {self.path} cannot be locked: {exc}') from None
                running = _read_pid(self.path)
                raise PidFileError(
                    f'pid file {self.path} is held by a running server'
                    f'{f" (pid {running})" if running else ""}: stop it '
                    'first, or give this one another --pidfile'
                ) from None
            if _same_file(fd, self.path):
                break
            # Locked a file that was unlinked meanwhile: try the new one.
            os.close(fd)
        else:
            raise PidFileError(f'pid file {self.path} keeps being replaced; is another '
                               'server starting and stopping?')
        self._fd = fd
        self._owner = os.getpid()
        self.stale_pid = _read_pid(self.path)

    def write(self) -> None:
        """Write the current process's pid (replacing any stale content).

        :raises RuntimeError: when the lock is not held
        """
        fd = self.fileno()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        self._owner = os.getpid()

    def release(self) -> None:
        """Remove the file and drop the lock.

        Only the process that locked the file, or the daemon that wrote its
        pid, removes it: a forked child leaving through the same code does
        not take the file away from the running server.
        """
        if self._fd is None:
            return
        # Unlinked while still locked: a server starting now either fails
        # to lock this file or, having locked it, sees it is gone and retries.
        if self._owner == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        self._owner = None

    def __enter__(self) -> PidFile:
        self.acquire()
        self.write()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: str) -> bool:
    try:
        by_name = os.stat(path)
    except FileNotFoundError:
        return False
    by_fd = os.fstat(fd)
    return (by_name.st_dev, by_name.st_ino) == (by_fd.st_dev, by_fd.st_ino)


def _on_sighup() -> None:
    count = logs.reopen_log_files()
    logger.info('SIGHUP received: log files reopened', extra={'reopened': count})


async def _main_with_sighup(main: typing.Callable[[], typing.Awaitable[int]]) -> int:
    loop = asyncio.get_running_loop()
    # Handled on the loop, not in the signal handler itself: reopening takes
    # the logging handlers' locks, which a signal could interrupt.
    loop.add_signal_handler(signal.SIGHUP, _on_sighup)
    try:
        return await main()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def _kept_descriptors() -> list[int]:
    """Descriptors of the root logger's files, to survive daemonizing."""
    kept = []
    for handler in logging.getLogger().handlers:
        stream: typing.Any = getattr(handler, 'stream', None)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = stream.fileno()
            if fd > 2:  # 0-2 are redirected to /dev/null, not kept
                kept.append(fd)
    return kept


def _detach(pid_file: PidFile | None) -> typing.Any:
    """Become a daemon with python-daemon; only the daemon returns."""
    with needs_extra('--daemonize'):
        import daemon as python_daemon  # type: ignore[import-untyped]
    if not any(isinstance(h, logs.ReopenableFileHandler)
               for h in logging.getLogger().handlers):
        logger.warning('daemonizing without a log file: log messages are discarded; '
                       'give --log-file to keep them')
    kept = _kept_descriptors()
    if pid_file is not None:
        kept.append(pid_file.fileno())
    # python-daemon would set umask 0 (world-writable log and socket files);
    # the daemon keeps the umask it was started with instead.
    umask = os.umask(0o022)
    os.umask(umask)
    context = python_daemon.DaemonContext(
        detach_process=True,
        files_preserve=kept,
        umask=umask,
        # SIGHUP must not kill the daemon before the event loop handles it;
        # SIGTERM before then exits through SystemExit (the pid file is
        # still removed).  The terminal's job-control signals are ignored.
        signal_map={
            signal.SIGHUP: None,
            signal.SIGTERM: 'terminate',
            signal.SIGTSTP: None,
            signal.SIGTTIN: None,
            signal.SIGTTOU: None,
        },
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    context.open()
    return context


def run(
    main: typing.Callable[[], typing.Awaitable[int]],
    *,
    daemonize: bool = False,
    pidfile: str | None = None,
) -> int:
    """Run ``main()`` on a new event loop, as a daemon if asked to.

    :param main: makes the coroutine that serves until it should stop and
        returns the exit status (it installs its own SIGTERM/SIGINT
        handlers)
    :param daemonize: detach from the terminal first (python-daemon: double
        fork, new session, working directory ``/``, standard streams on
        ``/dev/null``, umask kept); the calling process exits with status 0
        once the daemon is forked
    :param pidfile: lock this file and write the server's pid into it for as
        long as `main` runs; it is removed on the way out
    :raises PidFileError: before detaching, when the pid file is held by a
        running server or cannot be created
    :raises ConfigurationError: before detaching, when `daemonize` is asked
        but python-daemon is not installed
    :returns: what `main` returned

    Configure logging first (:func:`.logs.configure_logging`): its files are
    kept open across the fork, and SIGHUP reopens them while `main` runs.
    Blocks until `main` returns.
    """
    pid_file = PidFile(pidfile) if pidfile is not None else None
    if pid_file is not None:
        pid_file.acquire()
    context = None
    try:
        if daemonize:
            context = _detach(pid_file)
        if pid_file is not None:
            pid_file.write()
            if pid_file.stale_pid is not None:
                logger.warning('replaced a stale pid file', extra={
                    'path': pid_file.path, 'stale_pid': pid_file.stale_pid})
        if context is not None:
            logger.info('running as a daemon', extra={
                'pidfile': pid_file.path if pid_file else None})
        return asyncio.run(_main_with_sighup(main))
    finally:
        if pid_file is not None:
            pid_file.release()
        if context is not None:
            context.close()
