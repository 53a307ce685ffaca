"""The model catalogue, the context sent with a prompt, and the wire decoders, in isolation."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec
import pytest

from broker.core.bodies import SnapshotMessage
from broker.core.catalogue import (
    Catalogue,
    CatalogueError,
    ModelParams,
    SimulatedParams,
    UnknownModel,
)
from broker.core.settings import Settings
from workers.context import _turns, bound_turns
from workers.providers import default_providers
from workers.providers.base import Message
from workers.providers.failures import retry_after
from workers.providers.framing import NdjsonDecoder, SseDecoder, SseEvent
from workers.providers.gemini import GeminiProvider
from workers.providers.generic import GenericProvider
from workers.providers.openai_chat import OpenAIChatProvider
from workers.providers.paths import lookup, parse_path
from workers.providers.simulated import SimulatedProvider

CATALOGUE_TOML = """
[models."gpt-4o-mini"]
provider = "openai_chat"
api_key_env = "OPENAI_API_KEY"

[models.claude]
provider = "anthropic"
model = "claude-sonnet-4-5"
api_key_env = "ANTHROPIC_API_KEY"
max_tokens = 8192
body = { thinking = { type = "enabled", budget_tokens = 2048 } }

[models.flash]
provider = "gemini"
model = "gemini-2.5-flash"
api_key_env = "GEMINI_API_KEY"
body = { generationConfig = { thinkingConfig = { includeThoughts = true } } }

[models.tgi]
provider = "generic"
base_url = "http://127.0.0.1:8080/generate_stream"
extract = { text = "token.text", done = "details", finish_reason = "details.finish_reason" }
"""


def _catalogue(tmp_path: Path, text: str = CATALOGUE_TOML, **settings: str) -> Catalogue:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return Catalogue.from_settings(Settings(models_file=str(path), **settings))  # type: ignore[arg-type]


def test_catalogue_reads_the_toml_file(tmp_path: Path) -> None:
    catalogue = _catalogue(tmp_path)
    assert set(catalogue.models) == {"simulated", "gpt-4o-mini", "claude", "flash", "tgi"}
    claude = catalogue.models["claude"]
    assert (claude.provider, claude.upstream_model("claude"), claude.url_root()) == (
        "anthropic",
        "claude-sonnet-4-5",
        "https://api.anthropic.com",
    )
    assert catalogue.models["gpt-4o-mini"].upstream_model("gpt-4o-mini") == "gpt-4o-mini"
    assert catalogue.models["gpt-4o-mini"].url_root() == "https://api.openai.com/v1"
    assert claude.body == {"thinking": {"type": "enabled", "budget_tokens": 2048}}


def test_openai_shortcut_registers_models_from_two_variables() -> None:
    settings = Settings.from_env(
        {
            "BROKER_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
            "BROKER_OPENAI_MODELS": "llama3.2, fast=qwen3:0.6b",
        }
    )
    catalogue = Catalogue.from_settings(settings)
    assert set(catalogue.models) == {"simulated", "llama3.2", "fast"}
    fast = catalogue.models["fast"]
    assert (fast.provider, fast.upstream_model("fast"), fast.url_root(), fast.api_key_env) == (
        "openai_chat",
        "qwen3:0.6b",
        "http://127.0.0.1:11434/v1",
        "BROKER_OPENAI_API_KEY",
    )


def test_simulated_is_always_there_and_reserved(tmp_path: Path) -> None:
    assert set(Catalogue.from_settings(Settings()).models) == {"simulated"}
    with pytest.raises(CatalogueError, match="reserved"):
        _catalogue(tmp_path, '[models.simulated]\nprovider = "ollama"\n')


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[models.x\n", "not valid TOML"),
        ('[models.x]\nprovider = "nope"\n', "invalid"),
        ('[models.x]\nprovider = "ollama"\napi_key = "sk-123"\n', "unknown field"),
        ('[models.x]\nprovider = "generic"\nbase_url = "http://h/"\n', "needs base_url and"),
    ],
)
def test_bad_catalogue_is_refused_with_a_clear_message(
    tmp_path: Path, text: str, match: str
) -> None:
    with pytest.raises(CatalogueError, match=match):
        _catalogue(tmp_path, text)


def test_missing_catalogue_file() -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        Catalogue.from_settings(Settings(models_file="/nonexistent/models.toml"))


def test_params_are_checked_per_model(tmp_path: Path) -> None:
    catalogue = _catalogue(tmp_path)
    assert isinstance(catalogue.check_params("simulated", {"tokens": 3}), SimulatedParams)
    assert catalogue.check_params("claude", {"temperature": 0.3, "max_tokens": 10}) == ModelParams(
        0.3, None, 10
    )
    with pytest.raises(UnknownModel):
        catalogue.check_params("gpt-5-turbo-max", {})
    with pytest.raises(msgspec.ValidationError):
        catalogue.check_params("claude", {"tokens": 3})
    with pytest.raises(msgspec.ValidationError):
        catalogue.check_params("claude", {"temperature": 7})


def test_tools_go_to_the_models_that_pass_them_upstream(tmp_path: Path) -> None:
    catalogue = _catalogue(tmp_path)
    tool = {"name": "get_weather", "parameters": {"type": "object"}}
    for model in ("gpt-4o-mini", "claude", "flash"):
        checked = catalogue.check_params(model, {"tools": [tool]})
        assert checked.tools[0].name == "get_weather"
    for model, params in [
        ("tgi", {"tools": [tool]}),  # generic: no tool calls to read
        ("simulated", {"tools": [tool]}),
        ("claude", {"tools": [{"name": "has spaces"}]}),
        ("claude", {"tools": [{"name": "x", "unknown": 1}]}),
        ("claude", {"tools": "get_weather"}),
        ("claude", {"tools": [{"name": f"t{i}"} for i in range(129)]}),
        ("claude", {"tools": [{"name": "big", "parameters": {"description": "x" * 40_000}}]}),
    ]:
        with pytest.raises(msgspec.ValidationError):
            catalogue.check_params(model, params)


def test_generators_are_catalogue_names_whose_params_are_the_application_s(
    tmp_path: Path,
) -> None:
    catalogue = _catalogue(tmp_path, generators="support=myapp.agents:support_agent")
    assert catalogue.models["support"].provider == "generator"
    assert catalogue.models["support"].function == "myapp.agents:support_agent"
    anything = {"tokens": "many", "nested": {"any": [1, None]}}
    assert catalogue.check_params("support", anything) == anything
    # The front never imports the application's code: the module need not exist there.
    assert "myapp" not in __import__("sys").modules


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("support", "not model=module:function"),
        ("support=myapp.agents", "not model=module:function"),
        ("support=:fn", "not model=module:function"),
        ("=myapp:fn", "not model=module:function"),
        ("a=m:f,a=m:g", "named twice"),
        ("simulated=m:f", "already the name"),
        ("claude=m:f", "already the name"),
    ],
)
def test_a_malformed_generators_setting_names_the_variable(
    tmp_path: Path, raw: str, match: str
) -> None:
    with pytest.raises(CatalogueError, match=match) as error:
        _catalogue(tmp_path, generators=raw)
    assert "BROKER_GENERATORS" in str(error.value)


def test_providers_are_built_from_the_catalogue_with_keys_from_named_variables(
    tmp_path: Path,
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(CATALOGUE_TOML)
    settings = Settings(models_file=str(path))
    client = httpx.AsyncClient()
    providers = default_providers(
        settings, Catalogue.from_settings(settings), client, environ={"GEMINI_API_KEY": "g-key-123"}
    )
    assert isinstance(providers["simulated"], SimulatedProvider)
    assert isinstance(providers["gpt-4o-mini"], OpenAIChatProvider)
    assert isinstance(providers["tgi"], GenericProvider)
    flash = providers["flash"]
    assert isinstance(flash, GeminiProvider) and flash.api_key == "g-key-123"
    assert providers["gpt-4o-mini"].api_key is None  # type: ignore[attr-defined]


def test_the_catalogue_names_key_variables_and_never_holds_a_key() -> None:
    catalogue = Catalogue.from_settings(Settings(openai_models="m"))
    assert catalogue.models["m"].api_key_env == "BROKER_OPENAI_API_KEY"
    # (The JWT public key's file is a path to a key anyone may know, not a provider key.)
    assert not any(
        "key" in f.name and f.name not in ("key_prefix", "jwt_public_key_file")
        for f in msgspec.structs.fields(Settings)
    )


# ----- context -----


def _snapshot_messages() -> list[SnapshotMessage]:
    return [
        SnapshotMessage("m1", "user", "first question", "", "r1", "completed"),
        SnapshotMessage("m2", "assistant", "first answer", "some reasoning", "r1", "completed"),
        SnapshotMessage("m3", "user", "cancelled at once", "", "r2", "cancelled"),
        SnapshotMessage("m4", "assistant", "", "", "r2", "cancelled"),
        SnapshotMessage("m5", "user", "second question", "", "r3", "cancelled"),
        SnapshotMessage("m6", "assistant", "partial second answer", "", "r3", "cancelled"),
        SnapshotMessage("m7", "user", "the new prompt", "", "r4", "running"),
        SnapshotMessage("m8", "assistant", "", "", "r4", "running"),
    ]


def test_context_is_the_answered_turns_before_the_run() -> None:
    turns = _turns(_snapshot_messages(), "r4")
    assert [m for turn in turns for m in turn] == [
        Message("user", "first question"),
        Message("assistant", "first answer"),
        Message("user", "second question"),
        Message("assistant", "partial second answer"),
    ]


def test_context_keeps_the_newest_turns_within_the_bounds() -> None:
    turns = [(Message("user", f"q{i}"), Message("assistant", f"answer {i}")) for i in range(10)]
    assert bound_turns(turns, 4, 10_000) == (*turns[8], *turns[9])
    assert bound_turns(turns, 5, 10_000) == (*turns[8], *turns[9]), "whole turns only"
    per_turn = len("q9") + len("answer 9")
    assert bound_turns(turns, 100, per_turn * 3) == (*turns[7], *turns[8], *turns[9])
    assert bound_turns(turns, 100, per_turn - 1) == ()


# ----- wire decoders -----


def test_sse_decoder_handles_every_line_end_and_any_split() -> None:
    stream = (
        b"\xef\xbb\xbf: comment\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\n"
        b"id: 5\rretry: 10\rdata: three\r\r"
        b'data: {"x": 1}\n\nevent: empty\n\n'
    )
    expected = [
        SseEvent("a", "one\ntwo"),
        SseEvent("message", "three"),
        SseEvent("message", '{"x": 1}'),
    ]
    for size in (1, 2, 3, 5, len(stream)):
        decoder = SseDecoder()
        events = [
            e for i in range(0, len(stream), size) for e in decoder.feed(stream[i : i + size])
        ]
        assert events == expected, size
        assert not decoder.pending


def test_sse_decoder_knows_an_unfinished_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"half":') == []
    assert decoder.pending


def test_ndjson_decoder() -> None:
    decoder = NdjsonDecoder()
    assert decoder.feed(b'{"a":1}\n\n{"b"') == [b'{"a":1}']
    assert decoder.feed(b':2}\r\n{"c":3}') == [b'{"b":2}']
    assert decoder.rest() == b'{"c":3}'


def test_paths() -> None:
    document = {"choices": [{"delta": {"content": "hi"}}], "done": False}
    for raw in (
        "choices.0.delta.content",
        "$.choices[0].delta.content",
        "choices[0].delta.content",
    ):
        assert lookup(document, parse_path(raw)) == "hi"
    assert lookup(document, parse_path("choices.3.delta")) is None
    assert lookup(document, parse_path("done.x")) is None
    assert lookup(document, parse_path("done")) is False


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "12"}) == "12"
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == "0.25"
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == "0"
    assert retry_after({}) is None
