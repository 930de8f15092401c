"""A bare Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

bench/page_load.py drives Chromium with it so that nothing is attached to a page or its
frames while they load: the bench attaches only afterwards, to read the browser's own
timestamps. (Playwright attaches to every new frame as it starts, pausing it until the
driver has set it up, and creates extra script contexts in each: fine for tests, but it
adds tens of milliseconds to exactly what the bench measures.)

Chromium reads commands from file descriptor 3 and writes replies and events to 4, each
message one JSON object followed by a NUL byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from typing import Any

from common import stop_process


class Chromium:
    """One headless Chromium and the pipe to its browser target."""

    def __init__(self, executable: str, args: list[str]) -> None:
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()

        def on_fds_3_and_4() -> None:  # runs in the child, before exec
            command, reply = os.dup(command_read), os.dup(reply_write)
            os.dup2(command, 3)
            os.dup2(reply, 4)

        self._profile = tempfile.TemporaryDirectory(prefix="undersign-bench-chromium-")
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                *args,
                "about:blank",
            ],
            preexec_fn=on_fds_3_and_4,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(command_read)
        os.close(reply_write)
        self._pending = b""
        self._last_id = 0

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._pending:
            chunk = os.read(self._reply_read, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe")
            self._pending += chunk
        raw, self._pending = self._pending.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to ``session``'s target, else the browser) and wait for its reply.

        Events arriving meanwhile are dropped: the bench subscribes to none.
        """
        self._last_id += 1
        command: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session:
            command["sessionId"] = session
        os.write(self._command_write, json.dumps(command).encode() + b"\0")
        while True:
            message = self._message()
            if message.get("id") != self._last_id:
                continue
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    def evaluate(self, session: str, function: str) -> Any:
        """Call a JavaScript function (source text) in the session's page and return its value."""
        reply = self.call(
            "Runtime.evaluate", session, expression=f"({function})()", returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise RuntimeError(reply["exceptionDetails"])
        return reply["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, RuntimeError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.process, group=False)
        os.close(self._command_write)
        os.close(self._reply_read)
        self._profile.cleanup()
