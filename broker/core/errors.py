"""Every error code the API answers with: its HTTP status and what it means, said once.

An error leaves as ``{"error": {"code", "message"}}`` with the code's status. Code raises
``ApiError(CODE, message)`` naming the code, never the status again; each route declares the
codes it can answer, and the OpenAPI document is generated from those declarations and this
registry (``broker.front.openapi``).
"""

from __future__ import annotations

from typing import NamedTuple


class ErrorCode(NamedTuple):
    name: str
    status: int
    meaning: str


REGISTRY: dict[str, ErrorCode] = {}


def _code(name: str, status: int, meaning: str) -> ErrorCode:
    code = REGISTRY[name] = ErrorCode(name, status, meaning)
    return code


# Any request, before it reaches a route
MALFORMED_REQUEST = _code(
    "malformed_request", 400, "the request is not valid HTTP/1.1; the connection is closed"
)
REQUEST_TIMEOUT = _code("request_timeout", 408, "the request headers took too long to arrive")
HEADERS_TOO_LARGE = _code("headers_too_large", 431, "the request headers are too large or too many")
UNSUPPORTED_TRANSFER_CODING = _code(
    "unsupported_transfer_coding",
    501,
    "a request body sent with a transfer coding other than chunked; the connection is closed",
)
NOT_FOUND = _code("not_found", 404, "no such endpoint or file")
METHOD_NOT_ALLOWED = _code("method_not_allowed", 405, "the endpoint does not take this method")
CORS_REFUSED = _code(
    "cors_refused", 400, "a CORS preflight from an origin not in BROKER_CORS_ORIGINS"
)
CLIENT_DISCONNECTED = _code(
    "client_disconnected", 400, "the client left before its body arrived; nobody reads this"
)
HTTP_ERROR = _code("http_error", 500, "any other HTTP error, with its own status")
INTERNAL_ERROR = _code(
    "internal_error", 500, "an unexpected server error (a defect: please report it)"
)
FRONT_FULL = _code(
    "front_full", 503, "this front holds BROKER_MAX_STREAMS open streams; see Retry-After"
)
REDIS_UNAVAILABLE = _code("redis_unavailable", 503, "the store is unreachable; see Retry-After")
STORE_FULL = _code(
    "store_full", 503, "Redis is at its maxmemory and refuses writes; see Retry-After"
)

# Authentication and limits
UNAUTHORIZED = _code(
    "unauthorized", 401, "no acceptable token; the message says which check failed"
)
TOKEN_EXPIRED = _code(
    "token_expired", 401, "the token expired while a live read waited; retry with a fresh one"
)
AUTH_UNAVAILABLE = _code(
    "auth_unavailable", 503, "the token signing keys (JWKS) could not be fetched"
)
FORBIDDEN = _code("forbidden", 403, "the token may read this conversation, not write to it")
RATE_LIMITED = _code("rate_limited", 429, "too many requests or posts of this subject per minute")
TOO_MANY_STREAMS = _code(
    "too_many_streams",
    429,
    "too many open streams (this conversation, this subject, or this client address)",
)
TOO_MANY_FAILED_AUTHENTICATIONS = _code(
    "too_many_failed_authentications",
    429,
    "too many failed token checks from this client address this minute; see Retry-After",
)
TOO_MANY_RUNS = _code("too_many_runs", 429, "too many runs of this subject at once")
TOO_MANY_STREAMS_CREATED = _code(
    "too_many_streams_created", 429, "too many Durable Streams created by this subject today"
)
STORAGE_QUOTA_EXCEEDED = _code(
    "storage_quota_exceeded",
    413,
    "this subject's Durable Streams hold BROKER_LIMIT_DS_BYTES_PER_SUBJECT bytes already",
)
TOO_MANY_CONVERSATIONS = _code(
    "too_many_conversations", 429, "too many conversations created by this subject today"
)

# Requests and bodies
INVALID_ID = _code(
    "invalid_id", 400, "an identifier in the path does not match [A-Za-z0-9_-]{1,128}"
)
INVALID_LAST_EVENT_ID = _code(
    "invalid_last_event_id", 400, "Last-Event-ID (or ?last_event_id=) is not an event id"
)
MALFORMED_JSON = _code("malformed_json", 400, "the body is not JSON, or not a JSON object")
INVALID_IDEMPOTENCY_KEY = _code(
    "invalid_idempotency_key", 400, "Idempotency-Key is not 1 to 255 visible ASCII characters"
)
INVALID_QUERY = _code("invalid_query", 400, "a query parameter has a value it cannot take")
INVALID_CURSOR = _code("invalid_cursor", 400, "cursor is not a next_cursor this API returned")
BODY_TOO_LARGE = _code("body_too_large", 413, "the body exceeds BROKER_MAX_BODY_BYTES")
CONTENT_TOO_LARGE = _code(
    "content_too_large", 413, "content exceeds BROKER_MAX_CONTENT_CHARS characters"
)
UNSUPPORTED_MEDIA_TYPE = _code(
    "unsupported_media_type", 415, "the body is not sent as Content-Type: application/json"
)
INVALID_FIELD = _code(
    "invalid_field", 422, "a field of the body has a wrong type or value, or is unknown"
)
UNKNOWN_MODEL = _code("unknown_model", 422, "the model is not in the catalogue")
IDEMPOTENCY_KEY_REUSED = _code(
    "idempotency_key_reused", 422, "this Idempotency-Key was used with another body"
)

# Conversations and runs
CONVERSATION_NOT_FOUND = _code(
    "conversation_not_found", 404, "no such conversation, or none the token may see"
)
RUN_NOT_FOUND = _code("run_not_found", 404, "no such run in this conversation")
RUN_ACTIVE = _code("run_active", 409, "a run of this conversation has not finished")
NO_ACTIVE_RUN = _code("no_active_run", 409, "nothing runs in this conversation")
TRY_AGAIN = _code("try_again", 503, "the run could not be queued in time; see Retry-After")

# Durable Streams (/v1/stream/...)
INVALID_STREAM_NAME = _code(
    "invalid_stream_name", 400, "a stream name is 1 to 1024 characters of non-empty segments"
)
INVALID_TTL = _code("invalid_ttl", 400, "Stream-TTL is not a whole number of seconds")
INVALID_EXPIRES_AT = _code(
    "invalid_expires_at", 400, "Stream-Expires-At is not an RFC 3339 time with a zone"
)
INVALID_EXPIRY = _code("invalid_expiry", 400, "both Stream-TTL and Stream-Expires-At were given")
INVALID_OFFSET = _code(
    "invalid_offset", 400, "offset is not -1, now, or an offset this server sent"
)
INVALID_LIVE = _code("invalid_live", 400, "live is not long-poll or sse")
MISSING_OFFSET = _code("missing_offset", 400, "a live read without an offset")
INVALID_PRODUCER = _code(
    "invalid_producer",
    400,
    "Producer-Id/-Epoch/-Seq incomplete, malformed, or a new epoch not starting at 0",
)
EMPTY_BODY = _code("empty_body", 400, "an append without a body and without Stream-Closed: true")
EMPTY_ARRAY = _code("empty_array", 400, "an append of an empty JSON array to a JSON stream")
MISSING_CONTENT_TYPE = _code(
    "missing_content_type", 400, "an append with a body and no Content-Type"
)
INVALID_SEQ = _code("invalid_seq", 400, "Stream-Seq is longer than 255 characters")
INVALID_FORK = _code(
    "invalid_fork", 400, "Stream-Fork-(Sub-)Offset without Stream-Forked-From, or no source"
)
INVALID_SUB_OFFSET = _code(
    "invalid_sub_offset",
    400,
    "Stream-Fork-Sub-Offset malformed, without an offset, or past the next append",
)
STALE_PRODUCER_EPOCH = _code(
    "stale_producer_epoch", 403, "a newer Producer-Epoch exists (see the Producer-Epoch header)"
)
STREAM_NOT_FOUND = _code("stream_not_found", 404, "no such stream, or none the token may see")
STREAM_EXISTS = _code("stream_exists", 409, "the stream exists with another configuration")
STREAM_CLOSED = _code(
    "stream_closed", 409, "the stream is closed (Stream-Closed: true, Stream-Next-Offset)"
)
CONTENT_TYPE_MISMATCH = _code(
    "content_type_mismatch", 409, "the body's Content-Type is not the stream's"
)
SEQUENCE_CONFLICT = _code("sequence_conflict", 409, "Stream-Seq is not above the last one")
PRODUCER_SEQUENCE_GAP = _code(
    "producer_sequence_gap", 409, "a Producer-Seq is missing (Producer-Expected-Seq)"
)
SOURCE_DELETED = _code(
    "source_deleted", 409, "the fork's source was deleted (forks of it still live)"
)
OFFSET_GONE = _code("offset_gone", 410, "retention dropped the data past this offset")
TOO_MANY_MESSAGES = _code(
    "too_many_messages", 413, "a JSON write holds more than BROKER_DS_MAX_MESSAGES_PER_WRITE"
)
STREAM_TOO_LARGE = _code(
    "stream_too_large", 413, "the stream would hold more than BROKER_DS_MAX_STREAM_BYTES bytes"
)
STREAM_GONE = _code("stream_gone", 410, "the stream was deleted while forks of it live")

# Durable Streams subscriptions (/v1/stream/__ds/...): the protocol names these codes itself.
INVALID_SUBSCRIPTION = _code(
    "invalid_subscription", 400, "the subscription's body or id is not one the protocol allows"
)
WEBHOOK_URL_REJECTED = _code(
    "WEBHOOK_URL_REJECTED",
    400,
    "the webhook URL is not https, or names a private, loopback or other local target",
)
SUBSCRIPTION_NOT_FOUND = _code(
    "subscription_not_found", 404, "no such subscription, or none the token may see"
)
SUBSCRIPTION_EXISTS = _code(
    "subscription_exists", 409, "the subscription exists with another configuration"
)
ALREADY_CLAIMED = _code(
    "ALREADY_CLAIMED", 409, "another worker holds the lease (current_holder, generation)"
)
FENCED = _code(
    "FENCED", 409, "the token, wake_id or generation is not the current wake's, or its lease lapsed"
)
TOO_MANY_SUBSCRIPTIONS = _code(
    "too_many_subscriptions", 429, "this subject has BROKER_LIMIT_DS_SUBSCRIPTIONS_PER_SUBJECT"
)
TOO_MANY_SUBSCRIPTION_STREAMS = _code(
    "too_many_subscription_streams",
    413,
    "a subscription would link more than BROKER_DS_MAX_STREAMS_PER_SUBSCRIPTION streams",
)


class ApiError(Exception):
    """A refusal: the code (its status comes with it), a message for people, extra headers,
    and ``fields`` the error object carries besides its code and message (the protocol's
    ``current_holder`` of a claimed subscription, say)."""

    def __init__(
        self,
        error: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
        fields: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.headers = headers
        self.fields = fields

    @property
    def code(self) -> str:
        return self.error.name

    @property
    def status(self) -> int:
        return self.error.status
