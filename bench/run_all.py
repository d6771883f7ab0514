"""Run every benchmark in ``bench/`` in turn (each compares tlskit with ``ssl`` in its own run).

    python bench/run_all.py [--json] [--quick]

``--json`` prints one JSON document holding each benchmark's JSON output; ``--quick`` shortens them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "handshake": [],
    "resumption": [],
    "bulk": [],
    "memory": [],
    "profile_handshake": [],
    "pki_verify": [],
}
QUICK = {
    "handshake": ["--duration", "1", "--tlslite-handshakes", "10"],
    "resumption": ["--duration", "1", "--fetches", "5"],
    "bulk": ["--seconds", "0.3", "--repeat", "1"],
    "memory": ["-n", "300"],
    "profile_handshake": ["-n", "200"],
    "pki_verify": [],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS))
    args = parser.parse_args()
    collected = {}
    failed = []
    for name, extra in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra, *(QUICK[name] if args.quick else [])]
        if args.json:
            proc = subprocess.run([*cmd, "--json"], stdout=subprocess.PIPE, check=False)
            if proc.returncode == 0:
                collected[name] = json.loads(proc.stdout)
        else:
            print(f"\n=== {name} ===", flush=True)
            proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            failed.append(name)
    if args.json:
        json.dump(collected, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
