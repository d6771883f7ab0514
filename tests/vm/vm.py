"""Build a throw-away Linux VM from Debian packages and run tlskit's kTLS tests (or benchmark) inside it.

    python3 tests/vm/vm.py                 # the kTLS tests; exit status 0 when all passed
    python3 tests/vm/vm.py --bench         # bench/ktls_sendfile.py inside the VM
    TLSKIT_VM_KERNEL=linux-image-6.12.117+deb12-cloud-amd64 python3 tests/vm/vm.py

Needs ``qemu-system-x86``, ``busybox-static``, ``kmod`` (depmod) and ``apt-get download`` (tests/vm/run.sh
installs them). The kernel package is fetched once into ``~/.cache/tlskit-vm/<package>/``; the initramfs
holds busybox, the Python running this script (binary, shared libraries, stdlib, the site-packages tlskit
imports), ``src/`` and the guest scripts, left uncompressed so that TCG boots it in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TLSKIT_VM_CACHE", Path.home() / ".cache" / "tlskit-vm"))
MARK = "KTLS-VM"  # the prefix of every line the guest reports on the serial console
# Kernel modules the guest may load: tls.ko and the AEADs it asks for (gcm(aes), rfc7539(chacha20,poly1305)).
MODULE_DIRS = ("kernel/net/tls", "kernel/crypto", "kernel/arch/x86/crypto", "kernel/lib/crypto")
# Python modules the guest runs; their imports decide which site-packages go into the initramfs.
GUEST_IMPORTS = ("tests.vm.guest", "tlskit.cli.main", "tlskit.serve.app",
                 "tlskit.serve.static", "ssl", "http.client", "json", "resource", "argparse")
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3",
               "ensurepip", "pydoc_data", "venv", "__phello__"}


class VMError(Exception):
    """The VM could not be built or started; the message says what is missing."""


# --- the kernel ----------------------------------------------------------------------------------------


def kernel_package() -> str:
    """``$TLSKIT_VM_KERNEL``, else the package ``linux-image-cloud-amd64`` depends on (bookworm: 6.1)."""
    if name := os.environ.get("TLSKIT_VM_KERNEL"):
        return name
    for attempt in range(2):
        out = _run(["apt-cache", "depends", "linux-image-cloud-amd64"], check=False)
        for line in out.splitlines():
            match = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)\s*$", line)
            if match:
                return match[1]
        if attempt == 0 and os.geteuid() == 0:
            _run(["apt-get", "update", "-qq"], check=False)  # a fresh machine may have no package lists
    raise VMError("apt-cache knows no linux-image-cloud-amd64 (is this Debian with apt lists updated?)")


@dataclass(frozen=True)
class Kernel:
    package: str
    release: str  # uname -r
    vmlinuz: Path
    modules: Path  # staging root holding lib/modules/<release>/ with decompressed modules and depmod files


def fetch_kernel(package: str) -> Kernel:
    """Download and unpack ``package`` once into the cache; reuse it afterwards."""
    cache = CACHE / package
    stage = cache / "modroot"
    done = cache / "ready"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        _run(["apt-get", "download", package], cwd=cache)
        debs = list(cache.glob("*.deb"))
        if not debs:
            raise VMError(f"apt-get download {package} produced no .deb")
        unpacked = cache / "deb"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        (vmlinuz,) = (unpacked / "boot").glob("vmlinuz-*")
        release = vmlinuz.name.removeprefix("vmlinuz-")
        shutil.copy(vmlinuz, cache / "vmlinuz")
        src = _find_modules(unpacked, release)
        dst = stage / "lib" / "modules" / release
        for sub in MODULE_DIRS:
            for path in (src / sub).rglob("*.ko*"):
                target = dst / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_module(path, target)
        for meta in src.glob("modules.builtin*"):
            shutil.copy(meta, dst / meta.name)
        depmod = shutil.which("depmod") or "/sbin/depmod"
        _run([depmod, "-b", str(stage), release])
        (cache / "release").write_text(release)
        shutil.rmtree(unpacked)
        for deb in debs:
            deb.unlink()
        done.write_text("ok\n")
    release = (cache / "release").read_text().strip()
    return Kernel(package, release, cache / "vmlinuz", stage)


def _find_modules(unpacked: Path, release: str) -> Path:
    for base in ("lib", "usr/lib"):
        if (unpacked / base / "modules" / release).is_dir():
            return unpacked / base / "modules" / release
    raise VMError(f"no lib/modules/{release} in the kernel package")


def _copy_module(path: Path, target: Path) -> None:
    """Busybox ``insmod``/``modprobe`` load only plain ``.ko`` files: decompress ``.ko.xz``/``.ko.zst``."""
    if path.suffix == ".xz":
        target.with_suffix("").write_bytes(lzma.decompress(path.read_bytes()))
    elif path.suffix == ".zst":
        _run(["zstd", "-q", "-d", "-f", str(path), "-o", str(target.with_suffix(""))])
    else:
        shutil.copy(path, target)


# --- the initramfs ---------------------------------------------------------------------------------------


class Cpio:
    """An uncompressed ``newc`` cpio archive; parents are created as directories, host symlinks kept."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str | Path | bytes, int, int]] = {}  # path -> (kind, src, mode, mtime)

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.entries[path] = ("file", data, mode, int(time.time()))

    def add_file(self, path: str, source: Path, mode: int | None = None) -> None:
        st = source.stat()
        self.entries[path] = ("file", source, mode or stat.S_IMODE(st.st_mode), int(st.st_mtime))

    def add_symlink(self, path: str, target: str) -> None:
        self.entries[path] = ("link", target, 0o777, 0)

    def add_host(self, path: str) -> None:
        """A host file at the same path, with every symlink on the way (``/lib -> usr/lib``)."""
        current = "/"
        for part in path.strip("/").split("/"):
            current = os.path.join(current, part)
            if os.path.islink(current):
                target = os.readlink(current)
                self.add_symlink(current, target)
                resolved = os.path.normpath(os.path.join(os.path.dirname(current), target))
                rest = os.path.relpath(path, current)
                self.add_host(resolved if rest == "." else os.path.join(resolved, rest))
                return
        if os.path.isdir(path):
            self.entries.setdefault(path, ("dir", b"", 0o755, 0))
        else:
            self.add_file(path, Path(path))

    def add_tree(self, guest: str, host: Path, skip: frozenset[str] = frozenset()) -> None:
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith("config-")]
            rel = os.path.relpath(dirpath, host)
            base = guest if rel == "." else os.path.join(guest, rel)
            for name in filenames:
                if name.startswith("_tkinter"):
                    continue  # pulls in Tcl/Tk and X11 libraries
                if name.endswith(".pyc") and not re.search(r"\.cpython-\d+\.pyc$", name):
                    continue  # optimized variants (.opt-1.pyc) are never imported
                source = Path(dirpath, name)
                if source.is_symlink():
                    self.add_symlink(os.path.join(base, name), os.readlink(source))
                else:
                    self.add_file(os.path.join(base, name), source)

    def write(self, out: Path) -> None:
        paths: dict[str, tuple[str, str | Path | bytes, int, int]] = {}
        for path in self.entries:
            parent = os.path.dirname(path)
            while parent not in ("/", "") and parent not in self.entries:
                paths[parent] = ("dir", b"", 0o755, 0)
                parent = os.path.dirname(parent)
        paths.update(self.entries)
        with out.open("wb") as f:
            for ino, path in enumerate(sorted(paths, key=lambda p: (p.count("/"), p)), start=1):
                kind, src, mode, mtime = paths[path]
                if kind == "dir":
                    data, ftype = b"", stat.S_IFDIR
                elif kind == "link":
                    data, ftype = str(src).encode(), stat.S_IFLNK
                else:
                    data = src if isinstance(src, bytes) else Path(src).read_bytes()
                    ftype = stat.S_IFREG
                _cpio_entry(f, path.lstrip("/"), ftype | mode, mtime, data, ino)
            _cpio_entry(f, "TRAILER!!!", 0, 0, b"", 0)
            f.write(bytes(-f.tell() % 512))  # concatenated archives must start on a boundary


def _cpio_entry(f: object, name: str, mode: int, mtime: int, data: bytes, ino: int) -> None:
    raw = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(raw), 0)
    header = b"070701" + b"".join(b"%08X" % v for v in fields)
    write = f.write  # type: ignore[attr-defined]
    write(header + raw + bytes(-(len(header) + len(raw)) % 4))
    write(data + bytes(-len(data) % 4))


def _shared_libraries(files: list[str]) -> set[str]:
    """Every library ``ldd`` lists for ``files`` (ELF executables and extension modules)."""
    libs: set[str] = set()
    for chunk in range(0, len(files), 200):
        out = subprocess.run(["ldd", *files[chunk : chunk + 200]], capture_output=True, text=True).stdout
        libs.update(re.findall(r"(?:=>\s*)?(/\S+)\s+\(0x", out))
    return libs


def _guest_site_packages() -> set[Path]:
    """Top-level site-packages entries the guest programs import, found by importing them here without
    ``site`` (so no ``.pth`` hook drags in unrelated packages)."""
    purelib, platlib = sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]
    # A venv made with --system-site-packages imports from the base interpreter's site-packages too.
    on_path = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    site_dirs = [Path(p) for p in dict.fromkeys((purelib, platlib, *on_path))]
    code = ("import sys, importlib\n"
            "for m in sys.argv[1:]:\n"
            "    try: importlib.import_module(m)\n"
            "    except Exception as e: print('import', m, 'failed:', e, file=sys.stderr)\n"
            "print('\\n'.join(getattr(m, '__file__', None) or '' for m in list(sys.modules.values())))")
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), *map(str, site_dirs)])
    done = subprocess.run([sys.executable, "-S", "-c", code, *GUEST_IMPORTS], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path), cwd=ROOT, check=True)
    if done.stderr:
        print(done.stderr, file=sys.stderr, end="")
    found: set[Path] = set()
    for line in filter(None, done.stdout.splitlines()):
        for site in site_dirs:
            if Path(line).is_relative_to(site):
                found.add(site / Path(line).relative_to(site).parts[0])
    return found


def base_image(kernel: Kernel) -> Path:
    """Busybox, Python with its libraries and packages, and the kernel modules (cached per kernel)."""
    version = ".".join(map(str, sys.version_info[:3]))
    packages = sorted(_guest_site_packages())  # in the name: a new dependency (h2) builds a new image
    digest = hashlib.sha256("\n".join(["site=/site", *(p.name for p in packages)]).encode()).hexdigest()[:12]
    out = CACHE / kernel.package / f"base-py{version}-{digest}.cpio"
    if out.exists():
        return out
    image = Cpio()
    for link, target in (("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        if os.path.islink(link):
            image.add_symlink(link, target)
    busybox = shutil.which("busybox") or "/bin/busybox"
    if "not a dynamic executable" not in subprocess.run(["ldd", busybox], capture_output=True, text=True).stderr:
        raise VMError(f"{busybox} is not statically linked: install busybox-static")
    image.add_file("/usr/bin/busybox", Path(busybox).resolve(), 0o755)
    python = os.path.realpath(sys.executable)
    image.add_host(python)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    image.add_tree(str(stdlib), stdlib, frozenset(STDLIB_SKIP))
    elf = [python, *(str(p) for p in stdlib.rglob("*.so") if "site-packages" not in p.parts
                     and not p.name.startswith("_tkinter") and not p.parent.name.startswith("config-"))]
    # under /site, on the guest's PYTHONPATH (init.sh): a venv's own site-packages is not on the base
    # interpreter's path in the guest, and one under /tmp would be hidden by the guest's tmpfs
    for package in packages:
        if package.is_dir():
            image.add_tree(f"/site/{package.name}", package, frozenset({"tests"}))
            elf += map(str, package.rglob("*.so"))
        else:
            image.add_file(f"/site/{package.name}", package)
            if package.suffix == ".so":
                elf.append(str(package))
    for lib in _shared_libraries(elf):
        image.add_host(lib)
    modules = kernel.modules / "lib" / "modules" / kernel.release
    image.add_tree(f"/usr/lib/modules/{kernel.release}", modules)
    tmp = out.with_suffix(".tmp")
    image.write(tmp)
    tmp.replace(out)
    return out


def project_image(out: Path) -> Path:
    """The project's ``src/``, the guest scripts and ``/init``: small, rebuilt on every run."""
    image = Cpio()
    skip = frozenset({"__pycache__", "tlskit.egg-info"})
    image.add_tree("/project/src", ROOT / "src", skip)
    for rel in ("tests/__init__.py", "tests/certs.py", "tests/vm/__init__.py", "tests/vm/guest.py",
                "bench/ktls_sendfile.py"):
        if (ROOT / rel).exists():
            image.add_file(f"/project/{rel}", ROOT / rel)
    init = (Path(__file__).parent / "init.sh").read_text().replace("@PYTHON@", os.path.realpath(sys.executable))
    image.add_bytes("/init", init.encode(), 0o755)
    image.write(out)
    return out


# --- running -------------------------------------------------------------------------------------------


@dataclass
class Result:
    kernel: str
    lines: list[str]  # the guest's report lines (MARK prefix removed)
    console: str  # everything the serial console printed
    seconds: float
    exit_code: int | None

    @property
    def done(self) -> str | None:
        return next((line for line in self.lines if line.startswith("DONE")), None)

    @property
    def failures(self) -> list[str]:
        return [line for line in self.lines if line.startswith("FAIL")]


def check_host() -> None:
    missing = [tool for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb", "ldd")
               if shutil.which(tool) is None]
    if not (shutil.which("depmod") or Path("/sbin/depmod").exists()):
        missing.append("depmod (kmod)")
    if not (shutil.which("busybox") or Path("/bin/busybox").exists()):
        missing.append("busybox (busybox-static)")
    if missing:
        raise VMError(f"missing on this machine: {', '.join(missing)} (tests/vm/run.sh installs them)")


def run_vm(mode: str = "test", *, memory: int = 1024, cpus: int = 2, timeout: float = 240,
           args: str = "", echo: bool = False) -> Result:
    """Build (cached) and boot the VM; the guest runs ``mode`` (test or bench) and powers off."""
    check_host()
    kernel = fetch_kernel(kernel_package())
    base = base_image(kernel)
    work = CACHE / kernel.package
    project = project_image(work / "project.cpio")
    initrd = work / "initrd.cpio"
    with initrd.open("wb") as f:
        for part in (base, project):
            f.write(part.read_bytes())
    cmdline = f"console=ttyS0 panic=-1 quiet loglevel=3 tlskit.mode={mode} tlskit.args={args.replace(' ', ',')}"
    command = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus),
               "-m", str(memory), "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
               "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", cmdline]
    start = time.monotonic()
    console: list[str] = []
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise VMError(f"cannot start qemu: {e}") from None
    assert proc.stdout is not None
    deadline = start + timeout
    try:
        for raw in _lines(proc, deadline):
            line = raw.decode(errors="replace").rstrip("\r\n")
            console.append(line)
            if echo:
                print(line, flush=True)
        code = proc.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    lines = [line.split(MARK, 1)[1].strip() for line in console if MARK in line]
    return Result(kernel.release, lines, "\n".join(console), time.monotonic() - start, code)


def _lines(proc: subprocess.Popen[bytes], deadline: float) -> Iterator[bytes]:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        if not sel.select(remaining):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from complete


def _run(command: list[str], *, cwd: Path | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VMError(f"{command[0]}: {e}") from None
    if check and done.returncode:
        raise VMError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="store_true", help="run bench/ktls_sendfile.py instead of the tests")
    parser.add_argument("--size-mb", type=int, default=256, help="benchmark file size (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="benchmark rounds (default 3)")
    parser.add_argument("--memory", type=int, help="VM memory in MiB (default 1024, bench: size + 1024)")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--quiet", action="store_true", help="print only the guest's report lines")
    opts = parser.parse_args()
    mode = "bench" if opts.bench else "test"
    memory = opts.memory or (1024 + 2 * opts.size_mb if opts.bench else 1024)
    try:
        result = run_vm(mode, memory=memory, timeout=opts.timeout,
                        args=f"--size-mb {opts.size_mb} --repeat {opts.repeat}", echo=not opts.quiet)
    except VMError as e:
        print(f"tlskit VM: {e}", file=sys.stderr)
        return 2
    if opts.quiet:
        print("\n".join(result.lines))
    print(f"tlskit VM: Linux {result.kernel}, {result.seconds:.1f} s, qemu exit {result.exit_code}",
          file=sys.stderr)
    if result.done is None:
        print("tlskit VM: the guest did not finish (see the console output above)", file=sys.stderr)
        return 1
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
