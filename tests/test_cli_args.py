"""Bad command-line values are usage errors naming the flag (exit 2), never tracebacks from deep inside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tlskit.cli.main import main


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["probe", "localhost:1", "--timeout", "-1"], "--timeout"),
        (["probe", "localhost:1", "--timeout", "nan"], "--timeout"),
        (["scan", "localhost:1", "--timeout", "inf"], "--timeout"),
        (["scan", "localhost:1", "--max-connections", "0"], "--max-connections"),
        (["diagnose", "localhost:1", "--timeout", "0"], "--timeout"),
        (["bench", "localhost:1", "--concurrency", "100000"], "--concurrency"),
        (["bench", "localhost:1", "--duration", "-1"], "--duration"),
        (["bench", "localhost:1", "--count", "-5"], "--count"),
        (["serve", "--workers", "100000"], "-w/--workers"),
        (["ca", "init", "/tmp/never-made", "--name", "A" * 200], "--name"),
        (["ca", "issue", "/tmp/never-made", "x.test", "--days", "99999999"], "--days"),
        (["ca", "crl", "/tmp/never-made", "--days", "0"], "--days"),
        (["ca", "ocsp-serve", "/tmp/never-made", "--validity", "-5"], "--validity"),
    ],
)
def test_out_of_range_values_are_usage_errors(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["serve", "--certs", "x"], ["probe", "localhost:1", "--bogus"], ["--bogus"]])
def test_a_mistyped_flag_is_told_with_its_commands_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """It was the top-level usage (`tlskit [-h] [--version] COMMAND ...`), which lists no flag of the command."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    usage = "usage: tlskit [-h]" if argv[0].startswith("-") else f"usage: tlskit {argv[0]} "
    flag = next(a for a in argv if a.startswith("--"))
    assert err.startswith(usage) and f"error: unrecognized arguments: {flag}" in err, err


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tlskit", *argv], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_files_that_cannot_be_used_are_one_line_errors(tmp_path: Path) -> None:
    probe = _run("probe", "localhost:1", "--keylog", str(tmp_path))
    assert probe.returncode == 2 and "--keylog" in probe.stderr and "Traceback" not in probe.stderr
    ca = tmp_path / "ca"
    assert _run("ca", "init", str(ca)).returncode == 0
    (ca / "index.json").write_text(json.dumps({"x": 1}))
    listed = _run("ca", "list", str(ca))
    assert listed.returncode == 2 and "index.json is damaged" in listed.stderr and "Traceback" not in listed.stderr
    (ca / "ca.json").write_text("{}")
    issued = _run("ca", "issue", str(ca), "x.test")
    assert issued.returncode == 2 and "ca.json is damaged" in issued.stderr and "Traceback" not in issued.stderr


def test_unreadable_inputs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "runs.txt"
    assert main(["diagnose", "--s-client", str(missing)]) == 2
    expected = f"tlskit diagnose: error: cannot read --s-client {missing}: No such file or directory"
    assert capsys.readouterr().err.strip() == expected
    assert main(["diagnose", "--haproxy", str(tmp_path)]) == 2
    assert f"cannot read --haproxy {tmp_path}: Is a directory" in capsys.readouterr().err
    capture, keylog = tmp_path / "not.pcap", tmp_path / "keys.log"
    capture.write_bytes(b"garbage\n")
    keylog.write_text("")
    assert main(["decrypt", "--keylog", str(keylog), str(capture)]) == 2
    err = capsys.readouterr().err
    assert f"{capture} is not a pcap or pcapng capture" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("flag", "value"), [("--proxy", "http://[::1"), ("--redis", "redis://[::1")])
def test_unparsable_urls_name_their_flag(flag: str, value: str, tmp_path: Path) -> None:
    result = _run("serve", str(tmp_path), flag, value, "--port", "0")
    assert result.returncode == 2 and result.stderr.startswith(f"tlskit serve: error: {flag}: ")


def test_nan_durations_in_the_config_are_refused(tmp_path: Path) -> None:
    for text in ("[server]\ndrain_timeout = nan\n", "[server]\ncert_poll_interval = inf\n",
                 "[tls]\nticket_rotate = nan\n"):
        config = tmp_path / "c.toml"
        config.write_text(text)
        result = _run("serve", "--config", str(config), "--port", "0")
        assert result.returncode == 2 and "must be a finite number" in result.stderr, (text, result.stderr)


@pytest.mark.parametrize("target", [":443", "", "localhost:99999", "[::1", "host:", "[::1]x", "foo..bar",
                                    "a" * 64 + ".example"])
def test_bad_targets_are_usage_errors(target: str) -> None:
    from tlskit.analysis.probe import parse_target

    with pytest.raises(ValueError, match="bad target"):
        parse_target(target)
    result = _run("probe", target, "--timeout", "2")
    assert result.returncode == 2 and "bad target" in result.stderr and "Traceback" not in result.stderr


def test_scan_of_a_closed_port_is_not_graded() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = _run("scan", f"127.0.0.1:{closed}", "--timeout", "2", "--json")
    assert result.returncode == 3 and json.loads(result.stdout)["grade"] == "-"


def test_bench_and_probe_say_what_is_wrong() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    bench = _run("bench", f"127.0.0.1:{closed}", "--count", "2", "--timeout", "1", "--insecure")
    assert "no handshake completed" in bench.stdout + bench.stderr and "None ms" not in bench.stdout
    probe = _run("probe", f"127.0.0.1:{closed}", "--key", "k.pem")
    assert probe.returncode == 2 and "--key goes with --cert" in probe.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_refuses_a_report_file_it_cannot_write_before_running() -> None:
    """Only the directory's existence was checked: the run went ahead and ended in a PermissionError traceback."""
    bench = _run("bench", f"127.0.0.1:{_closed_port()}", "-k", "--count", "5", "--png", "/proc/x.png")
    assert bench.returncode == 2 and bench.stdout == ""
    assert bench.stderr.startswith("tlskit bench: error: cannot write /proc/x.png: ")
    assert len(bench.stderr.splitlines()) == 1


def test_bench_prints_its_results_before_a_report_that_fails_to_write(tmp_path: Path) -> None:
    """/dev/full opens but every write fails (ENOSPC): the results came after the report, so they were lost."""
    png = tmp_path / "x.png"
    bench = _run("bench", f"127.0.0.1:{_closed_port()}", "-k", "--count", "1", "--png", str(png),
                 "--html", "/dev/full")
    assert bench.returncode == 2 and "no handshake completed" in bench.stdout
    assert bench.stderr == "tlskit bench: error: cannot write /dev/full: No space left on device\n"
    assert png.read_bytes().startswith(b"\x89PNG")
