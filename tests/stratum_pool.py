"""A Stratum pool for tests: listens on 127.0.0.1, answers XMRig-style logins, records them."""

from __future__ import annotations

import json
import socket
import threading
from types import TracebackType
from typing import Any


class StratumPool:
    """Accepts miners on loopback; ``logins`` holds every login request's params."""

    def __init__(self, ports: tuple[int, ...] = (0,)) -> None:
        """Listen on the first free port of ``ports`` (0: any), e.g. well-known pool ports."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for i, port in enumerate(ports):
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError:
                if i == len(ports) - 1:
                    raise
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.logins: list[dict[str, Any]] = []
        self.logged_in = threading.Event()
        self._conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def __enter__(self) -> StratumPool:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        while not self._stop:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("method") == "login":
                    self.logins.append(msg.get("params", {}))
                    reply = {"id": msg.get("id"), "jsonrpc": "2.0", "error": None, "result": {
                        "id": "1", "status": "OK", "job": {
                            "blob": "0" * 152, "job_id": "1", "target": "b88d0600",
                            "algo": "rx/0", "height": 3000000, "seed_hash": "0" * 64}}}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                    self.logged_in.set()
                else:
                    conn.sendall(json.dumps({"id": msg.get("id"), "jsonrpc": "2.0", "error": None,
                                             "result": {"status": "KEEPALIVED"}}).encode() + b"\n")

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self._conns:
            c.close()
