"""JWT verification: which keys and algorithms the broker trusts, and what a token must carry.

The accepted algorithms come from the configuration, never from the token, and always match the
kind of key: a token cannot pick ``none``, nor an HMAC algorithm that would turn a published
public key into a shared secret (key confusion). Every refusal says which check failed and
never repeats the token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.core.ids import is_valid_path_id
from broker.core.settings import Settings
from broker.front.security.principal import Principal, Via

_HMAC = frozenset({"HS256", "HS384", "HS512"})
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC = frozenset({"ES256", "ES384", "ES512"})
_EDDSA = frozenset({"EdDSA"})
# RFC 7518 §3.2: an HMAC key at least as long as the hash.
_MIN_SECRET_BYTES = 32
_MAX_READ_GRANTS = 1000
_JWKS_TIMEOUT_SECONDS = 5.0


class SecurityConfigError(Exception):
    """A security setting that cannot work; the message names the variable to fix."""


_TIME_CLAIMS = ("exp", "nbf", "iat")
# Tokens whose principal is remembered per front, until each expires (a few hundred bytes each).
_VERIFIED_TOKENS = 10_000


class Unauthorized(Exception):
    """The request carries no acceptable token; the message says why, never what the token was.

    ``authentic``: its signature verified (it is expired, say, or for another audience): not a
    guess, so not counted against the client's address (``broker.front.security.lockout``).
    """

    def __init__(self, message: str, *, token_seen: bool = True, authentic: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.token_seen = token_seen
        self.authentic = authentic


class KeysUnavailable(Exception):
    """The JWKS endpoint could not be read: no token can be checked until it can."""


def _algorithms(raw: str, default: frozenset[str], allowed: frozenset[str], kind: str) -> list[str]:
    chosen = [a.strip() for a in raw.split(",") if a.strip()] or sorted(default)
    wrong = [a for a in chosen if a not in allowed]
    if wrong:
        raise SecurityConfigError(
            f"BROKER_JWT_ALGORITHMS: {', '.join(wrong)} cannot be used with {kind}; "
            f"choose among {', '.join(sorted(allowed))}"
        )
    return chosen


def _public_key(path: str) -> tuple[Any, frozenset[str], frozenset[str]]:
    """The PEM's key, its default algorithm and the algorithms its kind allows."""
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SecurityConfigError(
            f"BROKER_JWT_PUBLIC_KEY_FILE: cannot read a PEM public key ({exc})"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, frozenset({"RS256"}), _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        default = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name
        )
        if default is None:
            raise SecurityConfigError(
                f"BROKER_JWT_PUBLIC_KEY_FILE: unsupported curve {key.curve.name}"
            )
        return key, frozenset({default}), frozenset({default})
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, _EDDSA, _EDDSA
    raise SecurityConfigError(
        "BROKER_JWT_PUBLIC_KEY_FILE: the key must be RSA, EC (P-256/384/521) or Ed25519"
    )


class TokenVerifier:
    """Checks tokens against one key source: a secret, a PEM public key, or a JWKS URL."""

    def __init__(
        self,
        *,
        algorithms: list[str],
        key: Any = None,
        jwks: jwt.PyJWKClient | None = None,
        jwks_cache_seconds: float = 300.0,
        audience: str = "",
        issuer: str = "",
        leeway: float = 0.0,
    ) -> None:
        self.algorithms = algorithms
        self._key = key
        self._jwks = jwks
        self._jwks_cache_seconds = jwks_cache_seconds
        self._jwks_keys: dict[str, tuple[jwt.PyJWK, float]] = {}
        self._jwks_lock = anyio.Lock()
        self._audience = audience or None
        self._issuer = issuer or None
        self.leeway = leeway
        required = ["exp", "sub"]
        if audience:
            required.append("aud")
        if issuer:
            required.append("iss")
        self._options: Any = {"require": required, "enforce_minimum_key_length": True}
        self._verified: dict[tuple[str, Via], Principal] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        sources = [
            name
            for name, value in (
                ("BROKER_JWT_SECRET", settings.jwt_secret),
                ("BROKER_JWT_PUBLIC_KEY_FILE", settings.jwt_public_key_file),
                ("BROKER_JWT_JWKS_URL", settings.jwt_jwks_url),
            )
            if value
        ]
        if len(sources) != 1:
            raise SecurityConfigError(
                "BROKER_AUTH=jwt needs exactly one of BROKER_JWT_SECRET, BROKER_JWT_PUBLIC_KEY_FILE "
                f"and BROKER_JWT_JWKS_URL (set: {', '.join(sources) or 'none'})"
            )
        if settings.jwt_leeway_seconds < 0:
            raise SecurityConfigError("BROKER_JWT_LEEWAY_SECONDS must not be negative")
        common: dict[str, Any] = {
            "audience": settings.jwt_audience,
            "issuer": settings.jwt_issuer,
            "leeway": settings.jwt_leeway_seconds,
        }
        if settings.jwt_secret:
            if len(settings.jwt_secret.encode()) < _MIN_SECRET_BYTES:
                raise SecurityConfigError(
                    f"BROKER_JWT_SECRET must be at least {_MIN_SECRET_BYTES} bytes long"
                )
            algorithms = _algorithms(
                settings.jwt_algorithms, frozenset({"HS256"}), _HMAC, "a secret"
            )
            return cls(algorithms=algorithms, key=settings.jwt_secret.encode(), **common)
        if settings.jwt_public_key_file:
            key, default, allowed = _public_key(settings.jwt_public_key_file)
            algorithms = _algorithms(settings.jwt_algorithms, default, allowed, "this public key")
            return cls(algorithms=algorithms, key=key, **common)
        if settings.jwt_jwks_cache_seconds <= 0:
            raise SecurityConfigError("BROKER_JWT_JWKS_CACHE_SECONDS must be positive")
        algorithms = _algorithms(
            settings.jwt_algorithms, frozenset({"RS256"}), _RSA | _EC | _EDDSA, "a JWKS URL"
        )
        try:
            client = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                lifespan=settings.jwt_jwks_cache_seconds,
                timeout=_JWKS_TIMEOUT_SECONDS,
            )
        except jwt.PyJWKClientError as exc:
            raise SecurityConfigError(f"BROKER_JWT_JWKS_URL: {exc}") from None
        return cls(
            algorithms=algorithms,
            jwks=client,
            jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
            **common,
        )

    async def _signing_key(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.DecodeError:
            raise Unauthorized("the token is malformed") from None
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("the token names no signing key (kid)")
        cached = self._jwks_keys.get(kid)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        # One lookup at a time: a burst of tokens with a new kid fetches the key set once.
        async with self._jwks_lock:
            cached = self._jwks_keys.get(kid)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            try:
                # urllib blocks: the fetch runs in a worker thread, never on the event loop.
                key = await anyio.to_thread.run_sync(self._jwks.get_signing_key, kid)
            except jwt.PyJWKClientConnectionError as exc:
                raise KeysUnavailable(str(exc)) from None
            except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.InvalidKeyError):
                raise Unauthorized("the token's signing key (kid) is not in the key set") from None
            self._jwks_keys[kid] = (key, time.monotonic() + self._jwks_cache_seconds)
            return key

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        # PyJWT checks the algorithm and the signature before any claim: the claims' errors
        # are those of authentic tokens.
        try:
            return jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self.leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired", authentic=True) from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized(
                "the token is not valid yet (nbf or iat in the future)", authentic=True
            ) from None
        except jwt.InvalidAudienceError:
            expected = self._audience or "none"
            raise Unauthorized(
                f"the token's audience is wrong (expected: {expected})", authentic=True
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"the token's issuer is wrong (expected: {self._issuer})", authentic=True
            ) from None
        except jwt.InvalidAlgorithmError:
            accepted = ", ".join(self.algorithms)
            raise Unauthorized(
                f"the token's algorithm is not accepted (accepted: {accepted})"
            ) from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token lacks the {exc.claim!r} claim", authentic=True) from None
        except jwt.DecodeError:
            raise Unauthorized("the token is malformed") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError):
            raise Unauthorized("the token is invalid") from None

    async def verify(self, token: str, via: Via) -> Principal:
        """The token's principal. A token already verified here is not verified again until it
        expires: a client sends the same one with every request, and checking a signature
        costs more than the rest of a small request's authentication."""
        key = (token, via)
        known = self._verified.get(key)
        if known is not None and (known.expires_at is None or time.time() < known.expires_at):
            return known
        claims = self._decode(token, await self._signing_key(token))
        principal = principal_from_claims(claims, via, self.leeway)
        if len(self._verified) >= _VERIFIED_TOKENS:
            # Forget the oldest: a dict keeps insertion order.
            del self._verified[next(iter(self._verified))]
        self._verified[key] = principal
        return principal


def principal_from_claims(claims: Mapping[str, Any], via: Via, leeway: float) -> Principal:
    for claim in _TIME_CLAIMS:
        # PyJWT reads these with int(), which takes "1700000000" too; RFC 7519 wants numbers.
        value = claims.get(claim)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise Unauthorized(f"the token's {claim!r} claim must be a number", authentic=True)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("the token's 'sub' claim must be a non-empty string", authentic=True)
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise Unauthorized("the token's 'admin' claim must be true or false", authentic=True)
    read = claims.get("read", [])
    if (
        not isinstance(read, list)
        or len(read) > _MAX_READ_GRANTS
        or not all(isinstance(cid, str) and is_valid_path_id(cid) for cid in read)
    ):
        raise Unauthorized(
            f"the token's 'read' claim must be a list of at most {_MAX_READ_GRANTS} conversation ids",
            authentic=True,
        )
    return Principal(
        subject=subject,
        admin=admin,
        read=frozenset(read),
        expires_at=float(claims["exp"]) + leeway,
        via=via,
    )
