"""``--workers N``: a supervisor process and N worker processes accepting on the same pre-bound sockets.

The supervisor binds, starts each worker as ``python -m tlskit.serve.workers`` with the listening sockets
inherited (``pass_fds``) and the command-line flags and shared ticket key on its stdin, restarts a worker that dies,
validates the configuration before passing SIGHUP on (a broken file never reaches the workers), watches the
certificate files, and on SIGTERM/SIGINT lets every worker drain. With metrics on, workers write to a
``PROMETHEUS_MULTIPROC_DIR`` the supervisor creates and serves the sum from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import ConfigError
from ..tickets.keyring import TicketKey
from .accesslog import setup_logging
from .certstore import files_fingerprint
from .metrics import MULTIPROC_ENV, ServeMetrics, mark_worker_dead, serve_metrics
from .server import (
    RENEWAL_CHECK_SECONDS,
    ServeProcess,
    Site,
    build_site,
    reload_changes,
    reload_error,
    told_by_the_supervisor,
)
from .settings import Flags, load_settings, per_process_state

__all__ = ["Supervisor", "worker_main"]

_log = logging.getLogger("tlskit.serve")


def _flags_json(flags: Flags) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else [plain(x) for x in v] if isinstance(v, tuple) else v

    return {k: plain(v) for k, v in dataclasses.asdict(flags).items()}


def _flags_from_json(data: dict[str, Any]) -> Flags:
    types = {f.name: str(f.type) for f in dataclasses.fields(Flags)}

    def typed(k: str, v: Any) -> Any:
        kind = types[k]
        if v is None:
            return None
        if "tuple" in kind:
            return tuple(Path(x) if "Path" in kind else x for x in v)
        return Path(v) if "Path" in kind else v

    return Flags(**{k: typed(k, v) for k, v in data.items()})



_METRICS_DIR_PREFIX = "tlskit-metrics-"  # + pid + "-": a supervisor's directory for its workers' metrics files
_METRICS_LOCK = ".supervisor.lock"  # in it: flock()ed by the supervisor for as long as it runs


def make_metrics_dir() -> tuple[str, int]:
    """A new metrics directory and the descriptor of its lock, held (flock) until the supervisor ends, however
    it ends: the kernel drops the lock of a killed process, which is what marks the directory stale."""
    path = tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{os.getpid()}-")
    fd = os.open(os.path.join(path, _METRICS_LOCK + ".new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(os.path.join(path, _METRICS_LOCK + ".new"), os.path.join(path, _METRICS_LOCK))  # locked already
    return path, fd


def remove_stale_metrics_dirs() -> None:
    """Remove the metrics directories of supervisors that are gone (killed with SIGKILL, they cannot clean up):
    ours, whose lock no process holds. A pid cannot tell (another PID namespace sharing /tmp has its own), a
    lock can; a directory without one is left alone."""
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{_METRICS_DIR_PREFIX}*"):
        try:
            if path.is_symlink() or not path.is_dir() or path.lstat().st_uid != os.getuid():
                continue
            fd = os.open(path / _METRICS_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no lock file (made by an older version, or being made): not ours to judge
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its supervisor runs
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)

class Supervisor:
    def __init__(self, site: Site, flags: Flags, sockets: list[socket.socket], *, quiet: bool) -> None:
        self.site, self.flags, self.sockets, self.quiet = site, flags, sockets, quiet
        self.workers: dict[int, subprocess.Popen[bytes]] = {}  # slot -> process
        # Signals wake the loop through a pipe (made in run): a signal handler that sets a threading.Event
        # deadlocks when it interrupts the main thread while that holds the Event's lock (a SIGHUP then hung the
        # supervisor for good). The handler is ``_signals.__setitem__`` (signum -> frame): C, so no Python frame
        # of it can be interrupted by the next signal. A Python handler was, over and over in a burst of SIGHUPs,
        # until the nested handlers hit the recursion limit and the supervisor died. The pipe is written by
        # CPython's C-level handler (``signal.set_wakeup_fd``), as asyncio does.
        self._wake_r = self._wake_w = -1
        self._signals: dict[int, FrameType | None] = {}  # signals received, handled in the main loop
        self.early_reload: Callable[[], bool] = lambda: False  # a SIGHUP came before run() could handle it
        self._metrics_dir: str | None = None
        self._metrics_lock = -1  # its lock's descriptor (flock held while we run)
        self._metrics: ServeMetrics | None = None
        self._restarts: dict[int, tuple[int, float]] = {}  # slot -> (quick deaths in a row, when to try again)
        self._started: dict[int, float] = {}  # slot -> when its worker was started
        self._reported: dict[int, subprocess.Popen[bytes]] = {}  # slot -> its exited worker, already reported

    def run(self, announce: Any) -> int:
        from .app import announcement

        settings = self.site.settings
        metrics_port = None
        if settings.metrics is not None:
            remove_stale_metrics_dirs()
            self._metrics_dir, self._metrics_lock = make_metrics_dir()
            os.environ[MULTIPROC_ENV] = self._metrics_dir
            # The supervisor's own series (reloads), written beside the workers' and summed with them; the value
            # class was chosen when prometheus_client was imported, before the directory existed.
            from prometheus_client import values

            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            self._metrics = ServeMetrics()
            try:
                metrics_port = serve_metrics(settings.metrics, None)
            except OSError as e:
                print(f"tlskit serve: error: cannot serve metrics on {settings.metrics.address} port "
                      f"{settings.metrics.port}: {e.strerror or e}", file=sys.stderr)
                return 1
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)  # full: the loop is awake already
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signals.__setitem__)
        if self.early_reload():  # one came while starting: do it once the workers run
            self._signals[signal.SIGHUP] = None
        try:
            for slot in range(settings.workers):
                self._spawn(slot)
            for line in announcement(self.site, self.sockets, metrics_port):
                announce(line)
            self._loop()
        finally:
            self._stop_all()
            wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
            signal.set_wakeup_fd(-1)  # (a signal from now on writes nowhere, not to a reused descriptor)
            os.close(wake_r)
            os.close(wake_w)
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
                os.close(self._metrics_lock)
        return 0

    def _spawn(self, slot: int) -> None:
        # On stdin, not in the environment: the ticket key must not show in /proc/PID/environ.
        spec = json.dumps({"flags": _flags_json(self.flags), "quiet": self.quiet,
                           "fds": [s.fileno() for s in self.sockets], "slot": slot,
                           "ticket_key": key.to_bytes().hex() if (key := self.site.ticket_key) else None,
                           "config_text": self.site.settings.source_text})  # the last one that loaded
        # The worker starts with SIGHUP blocked (a mask survives exec): until it handles one, the default action
        # would kill it, and a reload forwarded then (right after start, or from a certbot hook) left no worker.
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc = subprocess.Popen([sys.executable, "-m", "tlskit.serve.workers"], stdin=subprocess.PIPE,
                                    pass_fds=[s.fileno() for s in self.sockets],
                                    env={**os.environ, _SUPERVISOR_ENV: str(os.getpid())})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        assert proc.stdin is not None
        proc.stdin.write(spec.encode())
        proc.stdin.close()
        self.workers[slot] = proc
        self._started[slot] = time.monotonic()

    def _loop(self) -> None:
        interval = self.site.settings.cert_poll_interval
        seen = files_fingerprint(self.site.watched_files())
        next_poll = time.monotonic() + interval
        next_renewal_check = 0.0
        while True:
            select.select([self._wake_r], [], [], 0.2)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            if self._signals:
                signals = set()
                while self._signals:  # pop by pop: a handler may add one meanwhile
                    signals.add(self._signals.popitem()[0])
                if signals - {signal.SIGHUP}:  # SIGTERM/SIGINT
                    return
                self._reload("SIGHUP")  # once for any number that came meanwhile, as the kernel merges them
                seen = files_fingerprint(self.site.watched_files())
            for slot, proc in list(self.workers.items()):
                if proc.poll() is not None:
                    self._restart(slot, proc)
            if interval > 0 and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + interval
                now = files_fingerprint(self.site.watched_files())
                if now != seen:
                    self._reload("files changed")
                    seen = files_fingerprint(self.site.watched_files())
                elif time.monotonic() >= next_renewal_check:
                    next_renewal_check = time.monotonic() + RENEWAL_CHECK_SECONDS
                    if self.site.renewal_due(dt.datetime.now(dt.UTC)):
                        self._reload("development certificate renewal")
                        seen = files_fingerprint(self.site.watched_files())

    def _restart(self, slot: int, proc: subprocess.Popen[bytes]) -> None:
        """Replace a worker that exited; one that keeps dying at once (a config file broken since the last
        good reload, which a new worker reads) is retried after 1, 2, 4 ... 60 s, not in a fork loop."""
        now = time.monotonic()
        failures, retry_at = self._restarts.get(slot, (0, 0.0))
        if retry_at > now:
            return  # waiting to try again
        if self._reported.get(slot) is not proc:  # the Popen itself, not its pid (pids are reused)
            self._reported[slot] = proc
            mark_worker_dead(proc.pid)
            quick = now - self._started.get(slot, now) < 5.0
            failures = failures + 1 if quick else 0
            delay = min(60.0, 0.5 * 2 ** failures)  # 0.5 s after a crash; 1, 2, 4 ... 60 s while it fails at start
            _log.warning("worker %d (pid %d) exited with status %s: starting another%s", slot, proc.pid,
                         proc.returncode, f" in {delay:.1f} s" if failures else "")
            self._restarts[slot] = (failures, now + delay)
            if delay > 0.5:
                return
            time.sleep(0.5)
        self._spawn(slot)

    def _reload(self, why: str) -> None:
        try:
            site = build_site(load_settings(self.flags), self.site.ticket_key, previous=self.site)
        except Exception as e:  # whatever went wrong, the server that runs keeps running
            _log.error("reload (%s) failed, workers keep the previous configuration: %s", why, reload_error(e))
            if self._metrics:
                self._metrics.reloads.labels("failed").inc()
            return
        if (local := per_process_state(site.settings)) and len(self.workers) > 1:
            # each worker would keep its own replay set (a replayed 0-RTT request accepted once per worker) or
            # make its own ticket keys: refused, as at start
            _log.error("reload (%s) refused, workers keep the previous configuration: %s keeps its state in each "
                       "process and %d workers run; share it through redis, or restart with one worker", why,
                       local, len(self.workers))
            site.stateful.close_except(self.site.stateful)
            if self._metrics:
                self._metrics.reloads.labels("failed").inc()
            return
        self.site.stateful.close_except(site.stateful)
        old_site, self.site = self.site, site
        for proc in self.workers.values():
            proc.send_signal(signal.SIGHUP)
        _log.info("reload (%s): configuration valid, passed to %d workers; %s", why, len(self.workers),
                  reload_changes(old_site, site))
        if self._metrics:
            self._metrics.reloads.labels("ok").inc()

    def _stop_all(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for sock in self.sockets:  # our copy: new clients are refused now, not queued for workers that left
            sock.close()
        deadline = time.monotonic() + self.site.settings.drain_timeout + 5
        for proc in self.workers.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            mark_worker_dead(proc.pid)


_SUPERVISOR_ENV = "TLSKIT_SERVE_SUPERVISOR"  # the supervisor's pid, given to each worker it starts


def _stop_with_parent() -> None:
    """Linux: SIGTERM (a drain) when the supervisor dies, even by SIGKILL (PR_SET_PDEATHSIG); orphaned workers
    went on serving and held the port, so a restart failed with "Address already in use"."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def worker_main() -> int:
    """A worker: serve the inherited sockets with the same flags, until the supervisor says stop."""
    from .app import run_loop
    from .startup import remember_sighup

    early_hup = remember_sighup()  # a SIGHUP before the loop handles it: reloaded once up (by default it kills)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by the supervisor until now
    _stop_with_parent()
    if str(os.getppid()) != os.environ.get(_SUPERVISOR_ENV, str(os.getppid())):
        return 1  # the supervisor died while we started, before we asked to be told
    spec = json.loads(sys.stdin.buffer.read())
    flags = _flags_from_json(spec["flags"])
    key = TicketKey.from_bytes(bytes.fromhex(spec["ticket_key"])) if spec["ticket_key"] else None
    try:
        # the configuration the supervisor runs, even if the file has been broken since (or a crash loop)
        settings = load_settings(flags, spec.get("config_text") or None)
        setup_logging(json_lines=settings.log_json, quiet=True)  # its warnings formatted (--log-json: JSON lines)
        with told_by_the_supervisor(worker=True):
            site = build_site(settings, key)  # one ticket key for all
    except ConfigError as e:
        print(f"tlskit serve worker: error: {e}", file=sys.stderr)
        return 2
    setup_logging(json_lines=settings.log_json, quiet=spec["quiet"])
    sockets = [socket.socket(fileno=fd) for fd in spec["fds"]]
    metrics = ServeMetrics() if site.settings.metrics is not None else None
    process = ServeProcess(site, flags, sockets, metrics=metrics, watch=False, worker=True)
    process.early_reload = early_hup
    run_loop(process.run(), site.settings.uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())

