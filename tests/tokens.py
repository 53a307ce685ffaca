"""Tokens for the tests: a shared HS256 secret, key pairs made on the spot, and a JWKS server.

The JWKS server is a real HTTP server on 127.0.0.1 in a thread of the test process; the front
fetches from it as it would from an identity provider.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-" + "0123456789abcdef" * 4
AUTH = {"auth": "jwt", "jwt_secret": SECRET}


def claims(sub: str, ttl: float = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": int(now + ttl), **extra}


def hs256(sub: str, ttl: float = 600, **extra: Any) -> str:
    return jwt.encode(claims(sub, ttl, **extra), SECRET, algorithm="HS256")


def unsigned(payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with ``alg: none`` and no signature, as an attacker would write it."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header or {'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


class KeyPair:
    def __init__(self, private: Any) -> None:
        self.private = private
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def rsa(cls) -> KeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls) -> KeyPair:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def write_public(self, path: Path) -> str:
        path.write_bytes(self.public_pem)
        return str(path)

    def sign(self, payload: dict[str, Any], algorithm: str, kid: str | None = None) -> str:
        headers = {"kid": kid} if kid else None
        return jwt.encode(payload, self.private, algorithm=algorithm, headers=headers)

    def jwk(self, kid: str, algorithm: str) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(algorithm)
        key = json.loads(algo.to_jwk(self.private.public_key()))
        return {**key, "kid": kid, "use": "sig", "alg": algorithm}


class JwksServer:
    """Serves ``{"keys": [...]}`` at ``/jwks.json``; counts the fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                served.fetches += 1
                body = json.dumps({"keys": served.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)
