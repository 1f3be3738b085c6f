"""The kernels ``o11ylab run`` starts: over IPC (Unix sockets), not TCP on loopback.

ipykernel warns once per kernel, on the runner's terminal, that it "is running over TCP without
encryption": any local user can connect to a loopback port. A batch run's kernels talk only to
the runner on the same machine, so they use the ``ipc`` transport instead: Unix socket files
in a folder only this user can enter (Jupyter's runtime folder is 0700), no port, no warning.

A Unix socket's path holds at most 107 bytes. The socket files go beside the connection file
in the Jupyter runtime folder (``kernel-ID-ipc-N``, as jupyter_client names them) when that
path fits; else in a short private folder of their own under the temporary folder, removed
with the kernel; else (a temporary folder path that is too long too) the kernel stays on TCP
and its stderr is passed on without that one warning line. Only ipykernel kernels (the ones
that warn) move to IPC: another language's kernel may not read an ipc address from its
connection file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["SOCKET_PATH_MAX", "TCP_NOTE", "kernel_manager_class", "socket_folder"]

# sun_path is 108 bytes on Linux, with its terminating NUL (104 on macOS: the check below
# keeps room for the "-ipc-NN" suffix and a few bytes more).
SOCKET_PATH_MAX = 100
_SUFFIX = "-ipc-99"


def _fits(prefix: str) -> bool:
    return len(os.fsencode(prefix + _SUFFIX)) <= SOCKET_PATH_MAX


def socket_folder(kernel_id: str) -> tuple[Path, bool] | None:
    """Where a kernel's connection file and sockets go, and whether the folder is ours to remove
    afterwards; None when no folder gives a short enough path (stay on TCP)."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    if _fits(str(runtime / f"kernel-{kernel_id}")):
        with contextlib.suppress(OSError):
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            return runtime, False
    short = Path(tempfile.gettempdir())
    if _fits(str(short / "o11y-XXXXXXXX" / f"kernel-{kernel_id}")):
        with contextlib.suppress(OSError):
            return Path(tempfile.mkdtemp(prefix="o11y-")), True  # 0700
    return None


TCP_NOTE = b"Kernel is running over TCP without encryption"


def _pass_stderr(stream: Any) -> None:
    """Copy a kernel's stderr to ours, line by line, all but ipykernel's TCP warning."""
    try:
        for line in iter(stream.readline, b""):
            if TCP_NOTE not in line:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed, or a stderr without a buffer
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def kernel_manager_class(env: dict[str, str] | None = None) -> type[Any]:
    """An ``AsyncKernelManager`` that starts its kernel over IPC (see the module docstring).

    ``env``: variables added to the kernel's environment at launch. A Dask worker may run
    several tasks in threads at once: setting ``os.environ`` for one kernel would leak into
    the others, so the environment goes to the kernel's launch instead.
    """
    from jupyter_client.manager import AsyncKernelManager

    extra = dict(env or {})

    class RunKernelManager(AsyncKernelManager):
        _own_folder: Path | None = None
        _filter_stderr = False

        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            if extra:
                kw["env"] = {**os.environ, **kw.get("env", {}), **extra}
            if self.transport == "tcp" and not self.connection_file and self._speaks_ipc():
                if not self.kernel_id:
                    self.kernel_id = kw.pop("kernel_id", None) or str(uuid.uuid4())
                kernel_id = str(self.kernel_id)
                found = socket_folder(kernel_id)
                if found is None:
                    # No folder gives a short enough socket path: TCP, and the kernel's stderr
                    # passes through this process without that one warning line (it would say
                    # "use IPC", which we would have, had the path allowed it).
                    kw["stderr"] = subprocess.PIPE
                    self._filter_stderr = True
                else:
                    folder, own = found
                    stem = folder / f"kernel-{kernel_id}"
                    self.transport = "ipc"
                    self.connection_file = f"{stem}.json"
                    # Absolute: jupyter_client's default for ipc is relative to the cwd, and
                    # the kernel's cwd (the notebook's folder) is not the runner's.
                    self.ip = f"{stem}-ipc"
                    self._own_folder = folder if own else None
            return await super()._async_pre_start_kernel(**kw)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if self._filter_stderr and process is not None and process.stderr is not None:
                threading.Thread(
                    target=_pass_stderr,
                    args=(process.stderr,),
                    name="o11ylab-kernel-stderr",
                    daemon=True,
                ).start()

        def _speaks_ipc(self) -> bool:
            # ipykernel reads ipc from its connection file (and is the one that warns); other
            # kernels (IRkernel, IJulia) may build a TCP-style address from it: they keep TCP.
            try:
                argv = list(self.kernel_spec.argv) if self.kernel_spec is not None else []
            except Exception:  # noqa: BLE001 - no such kernel: jupyter_client says so itself
                return False
            return any("ipykernel" in str(part) for part in argv)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart and self._own_folder is not None:
                shutil.rmtree(self._own_folder, ignore_errors=True)
                self._own_folder = None

    return RunKernelManager
