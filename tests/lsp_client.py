"""A minimal LSP client for tests and bench/lsp_latency.py: it starts ``essdsl lsp`` as an
editor does and speaks JSON-RPC to it over the process's stdin/stdout.

Messages are framed as the LSP base protocol says: a ``Content-Length`` header
(the body's length in bytes of UTF-8), a blank line, the JSON body.  A reader
thread sorts what the server sends into responses (by id), notifications (in
order) and requests from the server (answered with a null result).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    pass


class LspClient:
    def __init__(self, args: tuple[str, ...] = (), encodings: Optional[list[str]] = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "essdsl", "lsp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        self._next_id = 0
        self._responses: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.notifications: list[dict] = []
        self._notified = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        capabilities: dict = {
            "textDocument": {
                "publishDiagnostics": {"relatedInformation": True, "versionSupport": True},
                "hover": {"contentFormat": ["markdown", "plaintext"]},
                "documentSymbol": {"hierarchicalDocumentSymbolSupport": True},
            }
        }
        if encodings:
            capabilities["general"] = {"positionEncodings": encodings}
        self.initialize_result = self.request(
            "initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": capabilities}, timeout=60
        )
        self.notify("initialized", {})

    # -- framing
    def _send(self, message: dict) -> None:
        body = json.dumps(message, ensure_ascii=False).encode("utf-8")
        self.process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)
        self.process.stdin.flush()

    def _read_message(self) -> Optional[dict]:
        stream = self.process.stdout
        length = None
        while True:
            header = stream.readline()
            if not header:
                return None
            header = header.strip()
            if not header:
                break
            name, _, value = header.decode("ascii").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return json.loads(stream.read(length).decode("utf-8"))

    def _read_loop(self) -> None:
        while True:
            message = self._read_message()
            if message is None:
                break
            if "id" in message and "method" in message:  # a request from the server
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif "id" in message:
                with self._lock:
                    box = self._responses.get(message["id"])
                if box is not None:
                    box.put(message)
            else:
                with self._notified:
                    self.notifications.append(message)
                    self._notified.notify_all()

    # -- API
    def request(self, method: str, params: Any, timeout: float = 30) -> Any:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            box: queue.Queue = queue.Queue()
            self._responses[request_id] = box
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            message = box.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response to {method} within {timeout} s; server stderr:\n{self.stderr_text()}") from None
        if "error" in message:
            raise ServerError(f"{method}: {message['error']}")
        return message.get("result")

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 30, start: int = 0) -> dict:
        """The first notification from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._notified:
            while True:
                for message in self.notifications[start:]:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(f"no matching notification within {timeout} s; server stderr:\n{self.stderr_text()}")
                self._notified.wait(left)

    def diagnostics(self, uri: str, version: int, timeout: float = 30) -> list[dict]:
        """The diagnostics the server publishes for ``uri`` at ``version``."""
        message = self.wait_for(
            lambda m: m.get("method") == "textDocument/publishDiagnostics"
            and m["params"]["uri"] == uri
            and m["params"].get("version") == version,
            timeout,
        )
        return message["params"]["diagnostics"]

    def open(self, uri: str, text: str, version: int = 1) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "space", "version": version, "text": text}})

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]})

    def at(self, method: str, uri: str, line: int, character: int, **extra) -> Any:
        return self.request(method, {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, **extra})

    def stderr_text(self) -> str:
        if self.process.poll() is None:
            return "(server still running)"
        return self.process.stderr.read().decode("utf-8", "replace")

    def close(self) -> int:
        """Shut the server down as an editor does; returns its exit status."""
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            return self.process.wait(timeout=10)
        except (TimeoutError, BrokenPipeError, OSError):
            self.process.kill()
            return self.process.wait()
        finally:
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
