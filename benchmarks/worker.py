"""Child-process entry point: ``python -m benchmarks.worker module:function`` (params on stdin).

The function gets the decoded params and returns something JSON-serialisable, which is written to
``params["result_path"]`` for the parent to read. Output (task logs) goes to the parent's log file.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main() -> int:
    target = sys.argv[1]
    params = json.loads(sys.stdin.buffer.read() or b"{}")
    module_name, _, func_name = target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(params)
    Path(params["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
