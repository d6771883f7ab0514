"""Blocking TLS over ``socket.socket``, shaped like ``ssl.SSLSocket`` so existing socket code carries over.

    with connect("example.com", 443, alpn=["http/1.1"]) as tls:
        tls.sendall(b"GET / HTTP/1.1\\r\\nHost: example.com\\r\\nConnection: close\\r\\n\\r\\n")
        body = tls.makefile("rb").read()

A ``TLSSocket`` may be read by one thread while another writes: engine state is guarded by a lock, and a
second (re-entrant) lock keeps records on the wire in the order they were sealed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ..config import ClientConfig, ServerConfig
from ..errors import AlertError, HandshakeTimeout, TLSError, UnexpectedEOF, WantReadError, WantWriteError
from ..pki.verify import TrustStore
from .common import (
    ALERT_LINGER,
    READ_SIZE,
    WRITE_SIZE,
    ConnectionInfo,
    TLSSession,
    client_config,
    close_after_alert,
    format_address,
    server_config,
    with_env_key_log,
)
from .ktls import KernelTLS, KTLSOption, KTLSPolicy, enable, policy

__all__ = ["TLSListener", "TLSSocket", "connect", "listen", "wrap_server_socket", "wrap_socket"]

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


class TLSSocket(ConnectionInfo):
    """A connected socket speaking TLS 1.3; the handshake runs on ``do_handshake()`` or the first I/O.

    EOF: ``recv`` returns ``b""`` after the peer's close_notify, and also when the transport closes without
    one after the handshake (``ssl``'s ``suppress_ragged_eofs``; set it False to get ``UnexpectedEOF``).
    Failures raise ``TLSError`` subclasses, after our alert has been sent to the peer.
    """

    __slots__ = ("_closed", "_ktls", "_ktls_policy", "_lock", "_owed", "_partial_record", "_push_wanted", "_ready",
                 "_refs", "_send_lock", "_session", "_sock", "_unsent", "conn", "suppress_ragged_eofs")

    def __init__(self, sock: socket.socket, session: TLSSession, *, suppress_ragged_eofs: bool = True,
                 ktls: KTLSOption = False) -> None:
        """``ktls``: hand the records to the kernel after the handshake (``tlskit.io.ktls``; falls back to
        userspace with a log line)."""
        self._sock = sock
        self._session = session
        session.describe_peer = lambda: _peer_address(sock)
        self.conn = session.conn
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._lock = threading.Lock()  # engine state
        self._send_lock = threading.RLock()  # wire order: taking output and sending it are one step
        self._refs = 0  # open makefile() objects; the socket really closes when they are gone too
        self._closed = False
        self._ktls_policy: KTLSPolicy | None = policy(ktls)
        self._ktls: KernelTLS | None = None
        self._unsent = b""  # sealed records an interrupted write left: they go out first, whole (send lock)
        self._partial_record = bytearray()  # unwrap: a record read in part when the socket had no more yet
        self._owed = 0  # plaintext a send() sealed and then raised on: its retry returns this count (as ssl)
        self._ready = False  # handshake done, its last flight written and kTLS set up
        self._push_wanted = False  # a reader queued output while a writer held the send lock

    # --- handshake ----------------------------------------------------------------------------------

    def do_handshake(self) -> None:
        """Run the handshake to completion; the socket's timeout bounds all of it (``HandshakeTimeout``).

        On a non-blocking socket (``setblocking(False)``) each call goes as far as the data allows and raises
        ``WantReadError`` or ``WantWriteError`` (both ``BlockingIOError``, as ``ssl``'s ``SSLWantReadError`` and
        ``SSLWantWriteError``) until the handshake completes: call it again when ``select`` says the socket is
        readable, or writable."""
        session = self._session
        with self._send_lock:
            if self._ready:
                return
            deadline = self._deadline()
            try:
                with self._lock:
                    session.start()
                while not session.conn.handshake_complete:
                    self._write_engine_output(deadline)
                    self._receive(self._recv_wire(deadline))
                self._write_engine_output(deadline)
                if self._ktls_policy is not None:
                    with self._lock:
                        self._ktls = enable(self._sock, session, self._ktls_policy)
                self._ready = True
            except TimeoutError:
                raise HandshakeTimeout(f"TLS handshake did not complete within {self._sock.gettimeout()} s") from None

    # --- reading ------------------------------------------------------------------------------------

    def recv(self, bufsize: int = READ_SIZE, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes of application data; ``b""`` at EOF. It returns as soon as some data is
        there, with everything decrypted so far up to ``bufsize``. A read from the socket takes up to 64 KiB,
        several records: what is decrypted and not yet returned is ``pending()``, which ``select`` cannot see
        (as with ``ssl``, where it happens less often): a select loop reads while ``pending()``."""
        _no_flags(flags)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")  # as socket.recv (b"" would read as EOF)
        if bufsize == 0 or not self._fill():
            return b""
        return self._session.take(bufsize)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        """Fill ``buffer`` (or its first ``nbytes``) with what is available; 0 at EOF."""
        _no_flags(flags)
        view = memoryview(buffer).cast("B")
        if nbytes < 0 or nbytes > len(view):  # as socket.recv_into
            raise ValueError("negative buffersize in recv_into" if nbytes < 0 else
                             "buffer too small for requested bytes")
        if nbytes:
            view = view[:nbytes]
        if not view or not self._fill():
            return 0
        return self._session.take_into(view)

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes | int:
        """``ssl.SSLSocket.read``: bytes, or the count read into ``buffer``."""
        return self.recv(len) if buffer is None else self.recv_into(buffer, len)

    def pending(self) -> int:
        """Decrypted bytes ready to be read without touching the socket."""
        return self._session.pending()

    # --- writing ------------------------------------------------------------------------------------

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        """Send all of ``data`` as full-size records, within the socket's timeout for all of it. After a
        ``TimeoutError`` (as after ``socket.sendall``'s) how much went out is unknown: close the connection."""
        _no_flags(flags)
        if not self._ready:
            self.do_handshake()
        whole = type(data) is bytes and 0 < len(data) <= WRITE_SIZE  # the usual call: one chunk, no copy
        view = _byte_view(data)
        try:
            with self._send_lock:
                deadline = self._deadline()
                # a send() retried as sendall: skip what it sealed
                start = self._settle(deadline, len(view)) if self._unsent or self._owed else 0
                if whole and not start:
                    self._seal_and_write(data, deadline)  # type: ignore[arg-type]  # bytes, checked above
                    return
                for offset in range(start, len(view), WRITE_SIZE):
                    self._seal_and_write(bytes(view[offset : offset + WRITE_SIZE]), deadline)
        finally:
            if self._push_wanted:
                self._after_write()

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        """Send a prefix of ``data`` (up to 256 KiB) and return its length. Like ``ssl``: when the socket times
        out or would block after that prefix was sealed into records, the error is raised and the records are
        kept; call ``send`` again with the same data and it finishes them and returns the prefix's length."""
        _no_flags(flags)
        self._ensure_handshake()
        view = _byte_view(data)[:WRITE_SIZE]
        if not view:
            return 0
        try:
            with self._send_lock:
                deadline = self._deadline()
                ktls = self._ktls
                if ktls is not None and ktls.tx:  # the kernel seals what it takes: a plain partial count
                    return self._kernel_send_some(view, deadline)
                if owed := self._settle(deadline, len(view)):
                    return owed
                try:
                    self._seal_and_write(bytes(view), deadline)
                except (TimeoutError, BlockingIOError):
                    if self._unsent:
                        self._owed = len(view)
                    raise
                return len(view)
        finally:
            self._after_write()

    def write(self, data: ReadableBuffer) -> int:
        """``ssl.SSLSocket.write``: send everything, return the length."""
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def key_update(self, request_peer: bool = False) -> None:
        """Send KeyUpdate (RFC 8446 §4.6.3); ``request_peer`` asks the peer to update its key too."""
        self._ensure_handshake()
        if self._ktls is not None:
            self._ktls.check_key_update()
        with self._send_lock:
            with self._lock:
                self.conn.key_update(request_peer)
            self._write_engine_output(self._deadline())

    def sendfile(self, file: IO[bytes], offset: int = 0, count: int | None = None) -> int:
        """Send a file (``socket.sendfile``): ``os.sendfile`` when kTLS TX is on, else records; bytes sent.
        Blocking sockets only (as ``socket.sendfile``: a partial send would lose its count)."""
        if self._sock.gettimeout() == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        self._ensure_handshake()
        with self._send_lock:
            ktls = self._ktls
            if ktls is not None and ktls.tx:
                return ktls.sendfile(file, offset, count)
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            chunk = file.read(WRITE_SIZE if count is None else min(WRITE_SIZE, count - sent))
            if not chunk:
                break
            self.sendall(chunk)
            sent += len(chunk)
        return sent

    @property
    def ktls(self) -> KernelTLS | None:
        """The kTLS state (``.tx``, ``.rx``) once the kernel took over records, else None."""
        return self._ktls

    # --- closing ------------------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        """Send close_notify when the write side closes (``SHUT_WR``/``SHUT_RDWR``), then shut the socket. The
        close_notify is a courtesy: it is skipped while another thread is writing, or dropped when the socket
        will not take it in time; the socket is shut down in any case (another thread's blocked write ends)."""
        try:
            if how in (socket.SHUT_WR, socket.SHUT_RDWR) and self._send_lock.acquire(blocking=False):
                try:
                    with contextlib.suppress(TimeoutError, BlockingIOError):
                        timeout = self._sock.gettimeout()  # a peer that reads nothing cannot hold it for ever
                        self._close_notify(0.0 if timeout == 0 else time.monotonic() + min(timeout or 1.0, 1.0))
                finally:
                    self._send_lock.release()
        finally:
            self._sock.shutdown(how)

    def unwrap(self) -> socket.socket:
        """Close TLS both ways (send close_notify, read up to the peer's) and return the plain socket. Records
        are read one at a time from here on, so what the peer sends in plaintext after its close_notify stays
        in the socket for the caller (bytes already read before ``unwrap`` was called excepted).

        On a non-blocking socket it raises ``WantReadError`` until the peer's close_notify is in (what was read
        of a record is kept for the next call); a peer that closes the connection without close_notify is
        ``UnexpectedEOF`` (``ssl``: ``SSLEOFError``), not a clean unwrap."""
        self._close_notify()
        session = self._session
        ktls = self._ktls
        while session.conn.handshake_complete and not session.eof:
            if ktls is not None and ktls.rx:
                self._read_transport()
                continue
            self._receive(self._recv_record())
        if session.ragged_eof:
            raise UnexpectedEOF("the peer closed the connection without close_notify: TLS was not shut down")
        return self._sock

    def _recv_record(self) -> bytes:
        """One whole record from the socket, read exactly (never past it), or what came before EOF. A timeout
        or a non-blocking socket with nothing to read keeps the part read for the next call."""
        buf = self._partial_record
        while True:
            need = 5 - len(buf) if len(buf) < 5 else 5 + int.from_bytes(buf[3:5], "big") - len(buf)
            if need <= 0:
                break
            try:
                part = self._sock.recv(need)
            except BlockingIOError:
                raise WantReadError(errno.EAGAIN, "nothing to read yet: call again when readable") from None
            if not part:
                break
            buf += part
        record = bytes(buf)
        buf.clear()
        return record

    def close(self) -> None:
        """Close the socket (after any ``makefile`` objects are closed), sending close_notify if we can."""
        self._closed = True
        if self._refs <= 0:
            self._real_close()

    def _real_close(self, linger: float = 0.0) -> None:
        """After our fatal alert: ``close_after_alert`` (``linger``: how long it may wait; 0, as close() must not
        hang, drops only what has arrived)."""
        sock = self._sock
        if sock.fileno() < 0:
            return
        try:
            if self.conn.handshake_complete:
                with self._lock:
                    self.conn.close()
                    out = self._unsent + self._session.outgoing()
                sock.setblocking(False)  # a courtesy alert must not hang close()
                if self._ktls is not None and self._ktls.tx:
                    self._ktls.send_records(out)
                else:
                    sock.send(out)
        except (OSError, TLSError):
            pass
        finally:
            if isinstance(self.conn.error, AlertError):
                close_after_alert(sock, linger)
            else:
                sock.close()

    def __enter__(self) -> TLSSocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- file objects and socket pass-throughs --------------------------------------------------------

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file object over the TLS stream, as ``socket.makefile`` (so ``http.client`` works)."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        if buffering is None or buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        raw = _RawTLSIO(self, reading, writing, buffering or io.DEFAULT_BUFFER_SIZE)
        self._refs += 1
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any  # typeshed's TextIOWrapper does not accept BufferedRWPair
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    @property
    def socket(self) -> socket.socket:
        """The underlying TCP socket (do not read or write it directly)."""
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    family = property(lambda self: self._sock.family, doc="as ``socket.family`` (ftplib reads it)")
    type = property(lambda self: self._sock.type, doc="as ``socket.type``")
    proto = property(lambda self: self._sock.proto, doc="as ``socket.proto``")

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def setblocking(self, flag: bool) -> None:
        """``socket.setblocking``: non-blocking calls raise ``BlockingIOError`` (see ``do_handshake``)."""
        self._sock.setblocking(flag)

    def getblocking(self) -> bool:
        return self._sock.getblocking()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def setsockopt(self, level: int, option: int, value: int | ReadableBuffer) -> None:
        self._sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return self._sock.getsockopt(level, option)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.version() or "handshaking"
        return f"<TLSSocket fd={self._sock.fileno()} {state} server_hostname={self.server_hostname!r}>"

    # --- the I/O loop -------------------------------------------------------------------------------
    # Deadlines, not socket timeouts: a call waits with poll() for what is left of the socket's timeout and
    # never calls settimeout, so a reader and a writer thread cannot change each other's timeout.

    def _ensure_handshake(self) -> None:
        if not self._ready:
            self.do_handshake()

    def _deadline(self) -> float | None:
        """When the current call must end: None on a blocking socket, 0.0 on a non-blocking one."""
        timeout = self._sock.gettimeout()
        return timeout if not timeout else time.monotonic() + timeout

    def _wait(self, events: int, deadline: float) -> None:
        """Until the socket is readable (POLLIN) or writable (POLLOUT): at once or BlockingIOError when
        ``deadline`` is 0.0 (non-blocking), else TimeoutError at the deadline."""
        remaining = 0.0 if deadline == 0.0 else deadline - time.monotonic()
        if self._sock.fileno() < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")  # closed (as a socket's own calls say)
        if remaining >= 0:
            poller = select.poll()
            poller.register(self._sock, events)
            if poller.poll(remaining * 1000):
                return
        if deadline == 0.0:
            kind = WantReadError if events == select.POLLIN else WantWriteError
            raise kind(errno.EAGAIN, "the socket is not ready: call again when select() says it is")
        raise TimeoutError("timed out")

    def _recv_wire(self, deadline: float | None) -> bytes:
        if deadline:
            self._wait(select.POLLIN, deadline)  # then recv does not wait: Python's own wait is per call
        elif deadline == 0.0:  # non-blocking: say which way to wait
            try:
                return self._sock.recv(READ_SIZE)
            except BlockingIOError:
                raise WantReadError(errno.EAGAIN, "nothing to read yet: call again when readable") from None
        return self._sock.recv(READ_SIZE)

    def _fill(self) -> bool:
        """Read until application data is buffered (True) or the peer is done (False); the socket's timeout
        bounds the whole wait, however many reads a record takes (a peer trickling bytes cannot stretch it)."""
        self._ensure_handshake()
        session = self._session
        if session.plaintext:
            return True
        deadline = self._deadline()
        conn = self.conn
        while not session.plaintext:
            if self._unsent or conn.pending_output:  # an interrupted write, a KeyUpdate answer: never blocks reads
                self._push_without_waiting()
            if session.eof:
                if session.ragged_eof and not self.suppress_ragged_eofs:
                    raise UnexpectedEOF("the peer closed the transport without close_notify")
                return False
            self._read_transport(deadline)
        if self._unsent or conn.pending_output:
            self._push_without_waiting()
        return True

    def _read_transport(self, deadline: float | None = None) -> None:
        """One socket read into the session (with kTLS RX: one record from the kernel)."""
        ktls = self._ktls
        if ktls is None or not ktls.rx:
            self._receive(self._recv_wire(deadline))
            return
        try:
            if deadline:
                self._wait(select.POLLIN, deadline)  # one deadline per call, as for records we read ourselves
            try:
                record = ktls.recv_record(READ_SIZE)
            except BlockingIOError:
                if deadline == 0.0:
                    raise WantReadError(errno.EAGAIN, "nothing to read yet: call again when readable") from None
                raise
            with self._lock:
                ktls.deliver(self._session, record)
        except TLSError:
            with contextlib.suppress(OSError, TLSError):
                self._write_engine_output(None)
            raise

    def _receive(self, data: bytes) -> None:
        try:
            with self._lock:
                self._session.receive(data)
        except TLSError:
            with contextlib.suppress(OSError):
                self._push_without_waiting()  # the alert tells the peer why
            raise

    def _settle(self, deadline: float | None, size: int) -> int:
        """Before new data: finish an interrupted write (raising while it cannot) and return how much of the
        caller's data a send() that raised already sealed (a retry owes nothing more), else 0."""
        if self._unsent:
            self._write(b"", deadline)
        owed = self._owed
        if owed > size:
            raise ValueError(f"retry send() with the data it raised on ({owed} bytes were sealed), as with ssl")
        self._owed = 0
        return owed

    def _seal_and_write(self, data: bytes, deadline: float | None) -> None:
        ktls = self._ktls
        if ktls is not None and ktls.tx:
            if deadline is None and self._sock.gettimeout() is None:
                ktls.send_data(data)  # blocking: all of it, or the connection failed
                return
            view, sent = memoryview(data), 0
            deadline = deadline if deadline is not None else self._deadline()
            while sent < len(view):  # one deadline for all of it (a socket timeout would restart per call)
                sent += self._kernel_send_some(view[sent:], deadline)
            return
        with self._lock:
            self.conn.send_data(data)
            out = self._session.outgoing()
        self._write(out, deadline)

    def _kernel_send_some(self, view: memoryview, deadline: float | None) -> int:
        """kTLS TX: what the kernel takes of ``view`` once the socket is writable by ``deadline`` (it seals
        what it takes, so a partial write cuts no record). Non-blocking: ``WantWriteError`` when it takes
        nothing now, as for records we seal."""
        ktls = self._ktls
        assert ktls is not None
        if deadline:
            self._wait(select.POLLOUT, deadline)
        try:
            return ktls.send_some(view)
        except BlockingIOError:
            if deadline == 0.0:
                raise WantWriteError(errno.EAGAIN, "the socket takes nothing now: call again when writable") from None
            raise

    def _write_engine_output(self, deadline: float | None) -> None:
        """What the engine queued (handshake flights, KeyUpdate, close_notify, alerts), after any leftovers."""
        with self._send_lock:
            with self._lock:
                out = self._session.outgoing()
            if out or self._unsent:
                ktls = self._ktls
                if ktls is not None and ktls.tx:
                    ktls.send_records(out)
                else:
                    self._write(out, deadline)

    def _push_without_waiting(self) -> None:
        """Write what is pending as far as the socket takes it now. While a writer thread holds the send lock,
        it is asked to do it when it is done (``_push_wanted``); trying the lock once more after asking closes
        the window where the writer released it before seeing the request."""
        if not self._send_lock.acquire(blocking=False):
            self._push_wanted = True
            if not self._send_lock.acquire(blocking=False):
                return
        try:
            self._push_wanted = False
            with contextlib.suppress(BlockingIOError, TimeoutError):
                self._write_engine_output(0.0)
        finally:
            self._send_lock.release()

    def _after_write(self) -> None:
        """A writer leaving the send lock: push what a reader queued meanwhile (a KeyUpdate answer, an alert)."""
        if self._push_wanted:
            self._push_without_waiting()

    def _write(self, out: bytes, deadline: float | None) -> None:
        """Write ``out`` after what an interrupted write left (send lock held). When the socket would block
        (non-blocking) or the deadline passes, the records not yet written are kept and go out first next
        time: the peer never sees a record cut short and another after it (bad_record_mac)."""
        if self._unsent:
            out, self._unsent = self._unsent + out, b""
        sock = self._sock
        if deadline is None:
            if sock.gettimeout() is None:  # (a deadline of None from _deadline() means just that)
                sock.sendall(out)  # blocking: all of it, or the connection failed
                return
            deadline = self._deadline()
            assert deadline is not None
        view, sent = memoryview(out), 0
        try:
            while sent < len(out):
                self._wait(select.POLLOUT, deadline)  # writable: the send takes some bytes without waiting
                sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
        except (TimeoutError, BlockingIOError):
            self._unsent = out[sent:]
            raise

    def _close_notify(self, deadline: float | None = None) -> None:
        """Queue close_notify and write it (after any records an interrupted write kept) by ``deadline``
        (default: the socket's timeout)."""
        if self.conn.handshake_complete:
            with self._send_lock:
                with self._lock:
                    self.conn.close()
                self._write_engine_output(self._deadline() if deadline is None else deadline)

    def _decref(self) -> None:
        self._refs -= 1
        if self._closed and self._refs <= 0:
            self._real_close()


class _RawTLSIO(io.RawIOBase):
    """The raw stream under ``makefile``'s buffers (what ``socket.SocketIO`` is to a plain socket)."""

    def __init__(self, tls: TLSSocket, reading: bool, writing: bool, limit: int) -> None:
        super().__init__()
        self._tls = tls
        self._reading = reading
        self._writing = writing
        self._limit = limit  # the buffer above: what it keeps to retry when a non-blocking write would block
        self._timed_out = False

    def readinto(self, buffer: WriteableBuffer, /) -> int | None:
        """Bytes read into ``buffer``; None when a non-blocking socket has none yet (``socket.SocketIO``). After
        a timeout, reading fails for good, as ``socket.SocketIO``'s: the buffer above may have dropped what it had
        read of a line, and the next read would go on mid-stream as if nothing was lost."""
        self._checkClosed()
        if not self._reading:
            raise io.UnsupportedOperation("not readable")
        if self._timed_out:
            raise OSError("cannot read from timed out object")
        try:
            return self._tls.recv_into(buffer)
        except BlockingIOError:
            return None
        except TimeoutError:
            self._timed_out = True
            raise

    @property
    def mode(self) -> str:
        return "rwb" if self._reading and self._writing else "rb" if self._reading else "wb"

    @property
    def name(self) -> int:
        return self._tls.fileno()

    def write(self, data: ReadableBuffer, /) -> int | None:
        """Bytes taken; None when a non-blocking socket takes none now (the buffer above retries the same data,
        which is what a sealed, interrupted send needs)."""
        self._checkClosed()
        if not self._writing:
            raise io.UnsupportedOperation("not writable")
        if self._tls.gettimeout() == 0:  # seal no more than the buffer keeps for its retry (the same bytes)
            data = memoryview(data)[: self._limit]
        try:
            return self._tls.send(data)
        except BlockingIOError:
            return None

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return self._writing

    def fileno(self) -> int:
        return self._tls.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._tls._decref()


def connect(
    host: str,
    port: int,
    *,
    server_name: str | None = None,
    cafile: str | os.PathLike[str] | None = None,
    trust: TrustStore | None = None,
    alpn: Iterable[str] = (),
    config: ClientConfig | None = None,
    timeout: float | None = None,
    ktls: KTLSOption = False,
    suppress_ragged_eofs: bool = True,
    **config_overrides: Any,
) -> TLSSocket:
    """Open TCP to ``host``:``port`` (IPv4 or IPv6) and complete the handshake.

    ``server_name`` (SNI and the name verified) defaults to ``host``; ``cafile``/``trust`` replace the
    system roots; other keywords set ``ClientConfig`` fields. ``timeout`` bounds the connect and the
    handshake, then stays the socket's timeout. ``ktls`` and ``suppress_ragged_eofs`` as ``TLSSocket``.
    """
    cfg = client_config(host, server_name=server_name, cafile=cafile, trust=trust, alpn=alpn,
                        config=config, overrides=config_overrides)
    sock = socket.create_connection((host, port), timeout)
    try:
        tls = TLSSocket(sock, TLSSession(cfg), ktls=ktls, suppress_ragged_eofs=suppress_ragged_eofs)
    except BaseException:
        sock.close()
        raise
    try:
        tls.do_handshake()
    except BaseException:
        tls._real_close(ALERT_LINGER)  # after our alert: waits briefly for the peer to have read it
        raise
    return tls


def wrap_socket(
    sock: socket.socket,
    *,
    server_name: str,
    cafile: str | os.PathLike[str] | None = None,
    trust: TrustStore | None = None,
    alpn: Iterable[str] = (),
    config: ClientConfig | None = None,
    do_handshake: bool = True,
    ktls: KTLSOption = False,
    suppress_ragged_eofs: bool = True,
    **config_overrides: Any,
) -> TLSSocket:
    """TLS as a client on a connected socket (STARTTLS: SMTP, IMAP, FTP; ``ssl``'s ``wrap_socket``); keywords
    as ``connect``, ``server_name`` required. The socket's timeout bounds the handshake; on a failure ``sock`` is
    left open (the caller owns it)."""
    cfg = client_config(server_name, server_name=server_name, cafile=cafile, trust=trust, alpn=alpn, config=config,
                        overrides=config_overrides)
    tls = TLSSocket(sock, TLSSession(cfg), ktls=ktls, suppress_ragged_eofs=suppress_ragged_eofs)
    if do_handshake:
        tls.do_handshake()
    return tls


def wrap_server_socket(sock: socket.socket, config: ServerConfig, *, ktls: KTLSOption = False,
                       suppress_ragged_eofs: bool = True) -> TLSSocket:
    """Serve TLS on an accepted socket; the handshake runs on ``do_handshake()`` or the first I/O."""
    server_config(config)
    return TLSSocket(sock, TLSSession(with_env_key_log(config)), ktls=ktls,
                     suppress_ragged_eofs=suppress_ragged_eofs)


class TLSListener:
    """A listening socket whose ``accept()`` returns ``TLSSocket``s (handshake deferred to first use, so a
    slow client cannot stall the accept loop)."""

    def __init__(self, sock: socket.socket, config: ServerConfig, *, ktls: KTLSOption = False) -> None:
        server_config(config)
        self.socket = sock
        self.config = with_env_key_log(config)
        self.ktls = ktls

    def accept(self) -> tuple[TLSSocket, Any]:
        sock, address = self.socket.accept()
        return TLSSocket(sock, TLSSession(self.config), ktls=self.ktls), address

    def getsockname(self) -> Any:
        return self.socket.getsockname()

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> TLSListener:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def listen(host: str | None, port: int, config: ServerConfig, *, backlog: int = 128, ktls: KTLSOption = False
           ) -> TLSListener:
    """Bind and listen on ``host``:``port`` (``None`` for all interfaces, dual-stack where possible)."""
    if host is None and socket.has_dualstack_ipv6():
        sock = socket.create_server(("", port), family=socket.AF_INET6, backlog=backlog, dualstack_ipv6=True)
    else:
        sock = socket.create_server((host or "", port), backlog=backlog)
    return TLSListener(sock, config, ktls=ktls)


def _byte_view(data: ReadableBuffer) -> memoryview:
    view = memoryview(data)
    return view if view.itemsize == 1 and view.ndim == 1 else view.cast("B")


def _no_flags(flags: int) -> None:
    if flags:
        raise ValueError("flags are not supported on a TLS socket")


def _peer_address(sock: socket.socket) -> str:
    """``host:port`` of the peer for the engine's log lines (``[v6]:port``); "unknown peer" once it is gone."""
    try:
        return format_address(sock.getpeername())
    except OSError:
        return "unknown peer"
