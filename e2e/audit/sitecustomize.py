"""Watch for local-disk writes by the provider in the e2e's Celery workers and triggerer.

``e2e/run.py`` puts this directory on ``PYTHONPATH`` of the processes it wants watched, with:

- ``OPENBANKING_E2E_AUDIT``: the JSON Lines file to report to (inside the process's own directory);
- ``OPENBANKING_E2E_AUDIT_ALLOWED``: ``os.pathsep``-separated directories the process may write to
  (the worker's own temporary directory).

Python imports ``sitecustomize`` at start-up, so the audit hook (PEP 578) is installed in the
worker's main process and inherited by every process it forks (Celery's pool, Airflow's task
supervisor and task runner). Every file the provider's code (a frame of
``airflow_provider_openbanking`` other than the sandbox bank, or of ``dags/``) opens for writing,
creates, renames or connects to as SQLite is reported: ``{"allowed": true}`` when inside an allowed
directory, else with the call stack. Airflow's own writes (task logs, its config) are not the
provider's and are not reported. One ``{"armed": pid}`` line says the hook is in place.

Not provider code; without ``OPENBANKING_E2E_AUDIT`` this module does nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import types

_REPORT = os.environ.get("OPENBANKING_E2E_AUDIT")


def _install(report: str) -> None:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    provider = os.path.join(repo, "airflow_provider_openbanking") + os.sep
    sandbox = os.path.join(provider, "sandbox") + os.sep
    dags = os.path.join(repo, "dags") + os.sep
    extra = os.environ.get("OPENBANKING_E2E_AUDIT_ALLOWED", "").split(os.pathsep)
    allowed = (*(os.path.abspath(p) + os.sep for p in extra if p), "/dev/", "/proc/")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    write_events = {
        "os.mkdir", "os.rename", "os.replace", "os.symlink", "os.link", "os.truncate",
        "shutil.copyfile", "shutil.copytree", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp",
        "sqlite3.connect",
    }  # fmt: skip
    state = threading.local()  # per thread: the hook's own os.open must not re-enter it

    def emit(record: dict[str, object]) -> None:
        fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(record, default=str) + "\n").encode())
        finally:
            os.close(fd)

    def provider_frame(filename: str) -> bool:
        return (filename.startswith(provider) and not filename.startswith(sandbox)) or filename.startswith(
            dags
        )

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" and event not in write_events:
            return
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                if not any(c in mode for c in "wax+"):
                    return
            elif not (isinstance(flags, int) and flags & write_flags):
                return
            targets = [path]
        else:
            targets = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if getattr(state, "busy", False):
            return
        state.busy = True
        try:
            paths = []
            for target in targets:
                if isinstance(target, int):  # os.open on a dir_fd-relative or already-open file
                    continue
                text = os.fsdecode(target)  # type: ignore[arg-type]
                if text.startswith("file:"):
                    text = text[len("file:") :].split("?", 1)[0]
                paths.append(os.path.abspath(text))
            if not paths:
                return
            frame: types.FrameType | None = sys._getframe(1)
            stack = []
            while frame is not None:
                stack.append(f"{frame.f_code.co_filename}:{frame.f_lineno}")
                frame = frame.f_back
            if not any(provider_frame(s.rsplit(":", 1)[0]) for s in stack):
                return
            emit(
                {
                    "pid": os.getpid(),
                    "event": event,
                    "paths": paths,
                    "allowed": all((p + os.sep).startswith(allowed) for p in paths),
                    "stack": [s for s in stack if "/site-packages/" not in s][:8],
                }
            )
        except Exception as exc:  # an exception here would break the audited call
            with contextlib.suppress(Exception):
                emit({"pid": os.getpid(), "event": event, "audit_hook_error": repr(exc)})
        finally:
            state.busy = False

    sys.addaudithook(hook)
    emit({"armed": os.getpid(), "argv": sys.argv[:3], "allowed": list(allowed)})


if _REPORT:
    _install(_REPORT)
