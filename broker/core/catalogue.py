"""The model catalogue: which ``model`` names clients may ask for, and what serves each.

The front tier checks a request against the catalogue before it accepts a run, so an unknown
model or a bad parameter is refused with a 422 and nothing is written; the workers build their
providers from the same catalogue. It comes from two places, both read through ``Settings``:

- a TOML file (``BROKER_MODELS_FILE``) with one ``[models."<name>"]`` table per model;
- the OpenAI-compatible shortcut: ``BROKER_OPENAI_MODELS`` names models served at
  ``BROKER_OPENAI_BASE_URL`` with the key in ``BROKER_OPENAI_API_KEY``;
- the application's own generators: ``BROKER_GENERATORS`` maps model names to
  ``module:function`` import paths. Only the workers import them: the front knows the names
  and nothing of the code, and passes the client's ``params`` through as they are.

A catalogue entry names the environment variable that holds an API key, never the key itself,
so the catalogue can be logged, diffed and committed. ``simulated`` always exists.
"""

from __future__ import annotations

import re
import tomllib
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec

from broker.core.settings import Settings

DEFAULT_MODEL = "simulated"
OPENAI_API_KEY_ENV = "BROKER_OPENAI_API_KEY"

ProviderKind = Literal[
    "simulated",
    "openai_chat",
    "openai_responses",
    "anthropic",
    "gemini",
    "ollama",
    "generic",
    "generator",
]
# The providers that pass the client's tool definitions upstream and stream tool calls back.
TOOL_PROVIDERS = frozenset({"openai_chat", "openai_responses", "anthropic", "gemini"})
GENERATORS_VARIABLE = "BROKER_GENERATORS"
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")

# Where each kind is served when an entry names no base URL (the vendors' documented roots).
DEFAULT_BASE_URLS: MappingProxyType[str, str] = MappingProxyType(
    {
        "openai_chat": "https://api.openai.com/v1",
        "openai_responses": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "gemini": "https://generativelanguage.googleapis.com/v1beta",
        "ollama": "http://127.0.0.1:11434",
    }
)


# The built-in model is for tests and demos. Its bounds allow what they need (45,000 words at
# full speed for a flood, 200 words 50 ms apart for a demo) and no more: a run that would
# hold a worker's slot longer than this is refused.
SIMULATED_MAX_SECONDS = 300
# A tool's parameters schema, as JSON: generous for real schemas, small beside the body bound.
MAX_TOOL_SCHEMA_BYTES = 32_768


class SimulatedParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The built-in model: deterministic words, no network."""

    tokens: Annotated[int, msgspec.Meta(ge=0, le=50_000)] = 60
    interval_ms: Annotated[float, msgspec.Meta(ge=0, le=1_000)] = 20
    seed: int | Annotated[str, msgspec.Meta(max_length=256)] | None = None
    reasoning_tokens: Annotated[int, msgspec.Meta(ge=0, le=50_000)] = 0

    def __post_init__(self) -> None:
        seconds = (self.tokens + self.reasoning_tokens) * self.interval_ms / 1000
        if seconds > SIMULATED_MAX_SECONDS:
            raise ValueError(
                f"(tokens + reasoning_tokens) * interval_ms is {seconds:g} s; "
                f"at most {SIMULATED_MAX_SECONDS} s"
            )


class ToolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tool the model may call: what the vendors agree on, mapped to each one's shape.

    The broker only tells the model about it; running the tool is the application's job.
    """

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, msgspec.Meta(max_length=10_000)] = ""
    # A JSON Schema of the arguments (an object schema, as every vendor expects).
    parameters: dict[str, Any] = {}

    def __post_init__(self) -> None:
        size = len(msgspec.json.encode(self.parameters))
        if size > MAX_TOOL_SCHEMA_BYTES:
            raise ValueError(
                f"tool {self.name!r}: its parameters schema is {size} bytes as JSON; "
                f"at most {MAX_TOOL_SCHEMA_BYTES}"
            )


class ModelParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a client may tune on a real model; each provider maps these to its own fields."""

    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    tools: Annotated[list[ToolSpec], msgspec.Meta(max_length=128)] | None = None


class Extraction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the generic provider reads a chunk: dotted paths into its JSON (``a.b.0.c``).

    The stream ends at the first chunk where ``done`` holds a truthy value (or equals
    ``done_value`` when that is set), at an SSE ``data`` equal to ``done_data``, or at an SSE
    event named ``done_event``. With no end condition at all, the end of the body is the end.
    """

    text: str | None = None
    reasoning: str | None = None
    done: str | None = None
    done_value: Any = None
    done_data: str | None = None
    done_event: str | None = None
    finish_reason: str | None = None
    input_tokens: str | None = None
    output_tokens: str | None = None
    error: str | None = None


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One catalogue entry: what serves a client-facing model name."""

    provider: ProviderKind
    # The model name sent upstream; empty means the client-facing name.
    model: str = ""
    base_url: str = ""
    # The NAME of the environment variable holding the API key (read by the workers only).
    api_key_env: str | None = None
    # Extra request headers, and fields merged into every request body (e.g. Anthropic's
    # ``thinking``, Gemini's ``generationConfig.thinkingConfig``, Ollama's ``think``).
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}
    # Anthropic requires a ``max_tokens``; used when the client sends none.
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
    # openai_chat: the body field the output limit goes in; empty picks by the model's name
    # (``max_completion_tokens`` for the reasoning models o1, o3, o4-mini..., gpt-5...).
    max_tokens_field: Literal["", "max_tokens", "max_completion_tokens"] = ""
    # Per-model overrides of the ``BROKER_PROVIDER_*`` timeouts.
    first_byte_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    idle_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # Generic provider only: the wire framing and how to read each chunk.
    format: Literal["sse", "ndjson"] = "sse"
    api_key_header: str = "Authorization"
    api_key_prefix: str = "Bearer "
    extract: Extraction | None = None
    # Generator only: the application's ``module:function``.
    function: str = ""

    def upstream_model(self, name: str) -> str:
        return self.model or name

    def url_root(self) -> str:
        return (self.base_url or DEFAULT_BASE_URLS.get(self.provider, "")).rstrip("/")


class _CatalogueFile(msgspec.Struct, forbid_unknown_fields=True):
    models: dict[str, ModelSpec] = {}


class CatalogueError(Exception):
    """The catalogue configuration is unreadable or invalid; the message says where."""


class UnknownModel(Exception):
    pass


class Catalogue(msgspec.Struct, frozen=True):
    """Client-facing model names and their entries, ``simulated`` included."""

    models: dict[str, ModelSpec]

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalogue:
        """Read the TOML file (if any), then add the OpenAI-compatible shortcut's models."""
        models: dict[str, ModelSpec] = {DEFAULT_MODEL: ModelSpec(provider="simulated")}
        if settings.models_file:
            models.update(_read_file(settings.models_file))
        for name, upstream in _parse_openai_models(settings.openai_models):
            models[name] = ModelSpec(
                provider="openai_chat",
                model=upstream,
                base_url=settings.openai_base_url,
                api_key_env=OPENAI_API_KEY_ENV,
            )
        if models[DEFAULT_MODEL].provider != "simulated":
            raise CatalogueError(
                f"the model name {DEFAULT_MODEL!r} is reserved for the built-in model"
            )
        for name, function in parse_generators(settings.generators):
            if name in models:
                raise CatalogueError(
                    f"{GENERATORS_VARIABLE}: {name!r} is already the name of a catalogue model"
                )
            models[name] = ModelSpec(provider="generator", function=function)
        for name, spec in models.items():
            if spec.provider == "generic" and (spec.extract is None or not spec.base_url):
                raise CatalogueError(
                    f"model {name!r}: a generic model needs base_url and [extract]"
                )
            if spec.provider == "generator" and not _IMPORT_PATH.fullmatch(spec.function):
                raise CatalogueError(
                    f'model {name!r}: a generator needs function = "module:function"'
                )
        return cls(models)

    def get(self, model: str) -> ModelSpec | None:
        return self.models.get(model)

    def check_params(self, model: str, params: dict[str, Any]) -> Any:
        """Validate ``params`` for ``model``; raises UnknownModel or msgspec.ValidationError.

        A generator's params are the application's business: any JSON object passes.
        """
        spec = self.models.get(model)
        if spec is None:
            raise UnknownModel(model)
        if spec.provider == "generator":
            return params
        if spec.provider == "simulated":
            return msgspec.convert(params, SimulatedParams)
        checked = msgspec.convert(params, ModelParams)
        if checked.tools is not None and spec.provider not in TOOL_PROVIDERS:
            raise msgspec.ValidationError(
                f"model {model!r} ({spec.provider}) does not take `tools`"
            )
        return checked


def _read_file(path: str) -> dict[str, ModelSpec]:
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        raise CatalogueError(f"cannot read the models file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"the models file {path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, _CatalogueFile).models
    except msgspec.ValidationError as exc:
        raise CatalogueError(f"the models file {path} is invalid: {exc}") from None


def _parse_openai_models(raw: str) -> list[tuple[str, str]]:
    """``"gpt-4o-mini, fast=gpt-4.1-nano"`` -> ``[("gpt-4o-mini", "gpt-4o-mini"), ("fast", ...)]``."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, upstream = item.partition("=")
        name, upstream = name.strip(), upstream.strip()
        if not name:
            raise CatalogueError(f"BROKER_OPENAI_MODELS: empty model name in {item!r}")
        pairs.append((name, upstream or name))
    return pairs


def parse_generators(raw: str) -> list[tuple[str, str]]:
    """``"support=myapp.agents:support_agent, b=pkg.mod:fn"`` -> ``[("support", "myapp..."), ...]``.

    Only the form is checked here; the workers import the functions when they start.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, equals, function = (part.strip() for part in item.partition("="))
        if not equals or not name or not _IMPORT_PATH.fullmatch(function):
            raise CatalogueError(f"{GENERATORS_VARIABLE}: {item!r} is not model=module:function")
        if name in seen:
            raise CatalogueError(f"{GENERATORS_VARIABLE}: {name!r} is named twice")
        seen.add(name)
        pairs.append((name, function))
    return pairs
