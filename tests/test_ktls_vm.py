"""kTLS on a real Linux kernel: boots the QEMU VM of tests/vm/ (Debian cloud kernel, TCG) and runs
tests/vm/guest.py inside it. About 20 s once the kernel package is cached in ~/.cache/tlskit-vm.

Where the VM cannot be built or started, the test fails with the reason when ``CI`` is set (a silent skip
would hide that kTLS went untested) and skips otherwise.
"""

from __future__ import annotations

import os

import pytest

from tests.vm import vm

pytestmark = pytest.mark.vm


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"kTLS VM could not run: {reason}", pytrace=False)
    pytest.skip(f"kTLS VM could not run: {reason}")


@pytest.mark.timeout(300)
def test_ktls_in_a_vm() -> None:
    try:
        result = vm.run_vm("test", timeout=240)
    except vm.VMError as e:
        _unavailable(str(e))
        return
    report = "\n".join(result.lines)
    if result.done is None:
        tail = "\n".join(result.console.splitlines()[-40:])
        pytest.fail(f"the VM did not finish (qemu exit {result.exit_code}, {result.seconds:.0f} s):\n{tail}",
                    pytrace=False)
    assert not result.failures, f"kTLS tests failed in the VM (Linux {result.kernel}):\n{report}"
    passed = [line for line in result.lines if line.startswith("PASS")]
    assert len(passed) >= 20, report
