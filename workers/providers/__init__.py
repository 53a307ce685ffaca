"""Model providers, built from the model catalogue (``broker.core.catalogue.Catalogue``).

One provider per catalogue entry, keyed by the name clients send. The HTTP providers of a
worker share one httpx client, so connections to an upstream are reused across runs. API keys
are read here, from the environment variables the entries name, and handed to the providers
only: they are never part of the catalogue, the settings or any message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import httpx

from broker.core.catalogue import Catalogue, ModelSpec
from broker.core.settings import Settings
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.failures import request_secrets
from workers.providers.gemini import GeminiProvider
from workers.providers.generic import GenericProvider
from workers.providers.ollama import OllamaProvider
from workers.providers.openai_chat import OpenAIChatProvider
from workers.providers.openai_responses import OpenAIResponsesProvider
from workers.providers.remote import RemoteProvider
from workers.providers.simulated import SimulatedProvider
from workers.providers.upstream import CallPolicy, Upstream

log = logging.getLogger(__name__)


def _remote_class(kind: str) -> type[RemoteProvider]:
    match kind:
        case "openai_chat":
            return OpenAIChatProvider
        case "openai_responses":
            return OpenAIResponsesProvider
        case "anthropic":
            return AnthropicProvider
        case "gemini":
            return GeminiProvider
        case "ollama":
            return OllamaProvider
        case "generic":
            return GenericProvider
    raise ValueError(f"no provider kind {kind!r}")


def build_provider(
    name: str,
    spec: ModelSpec,
    settings: Settings,
    client: httpx.AsyncClient,
    environ: Mapping[str, str],
) -> Provider:
    """The provider serving one catalogue entry."""
    if spec.provider == "simulated":
        return SimulatedProvider()
    api_key: str | None = None
    if spec.api_key_env:
        api_key = environ.get(spec.api_key_env) or None
        if api_key is None:
            log.warning(
                "model %r: %s (its API key variable) is not set; requests go without a key",
                name,
                spec.api_key_env,
            )
    secrets = request_secrets(api_key, spec.headers)
    upstream = Upstream(client, CallPolicy.for_model(settings, spec), secrets)
    return _remote_class(spec.provider)(spec, upstream, api_key)


def default_providers(
    settings: Settings,
    catalogue: Catalogue,
    client: httpx.AsyncClient,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Provider]:
    """Every model of the catalogue but the application's generators (``workers.generators``);
    the HTTP ones share ``client``, which the caller owns."""
    environ = os.environ if environ is None else environ
    return {
        name: build_provider(name, spec, settings, client, environ)
        for name, spec in catalogue.models.items()
        if spec.provider != "generator"
    }
