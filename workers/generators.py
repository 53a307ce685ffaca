"""The application's generators: imported by name from ``BROKER_GENERATORS``, run like a model.

A worker imports every generator when it starts (from its ``sys.path``, so ``PYTHONPATH``
works) and refuses to start when one cannot be imported, as it does with an unreadable
catalogue. A run of a generator goes through the same ``Generation`` as a built-in model's,
inside the same cancel scope, so leases, reclaim, coalescing, cancel, the terminal event and
the run's time bound apply to both alike.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from broker.core.catalogue import GENERATORS_VARIABLE, Catalogue
from workers.providers.base import Failure, Finish, GenerationRequest, Provider
from workers.relay import CancelRequested, Generation, Outcome, RunGone
from workers.run import GeneratorFailure, Run

log = logging.getLogger(__name__)

GeneratorFunction = Callable[[Run], Awaitable[None]]
GENERATOR_ERROR = "generator_error"


class GeneratorImportError(Exception):
    """A generator named in the configuration cannot be imported or is not a generator."""


def import_generator(name: str, path: str) -> GeneratorFunction:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise GeneratorImportError(
            f"{GENERATORS_VARIABLE}: model {name!r}: cannot import {module_name!r} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    function = getattr(module, attribute, None)
    if function is None:
        raise GeneratorImportError(
            f"{GENERATORS_VARIABLE}: model {name!r}: {module_name!r} has no {attribute!r}"
        )
    if not inspect.iscoroutinefunction(function):
        raise GeneratorImportError(
            f"{GENERATORS_VARIABLE}: model {name!r}: {path} is not an async function"
        )
    return function


@dataclass(frozen=True)
class ApplicationGenerator:
    """One configured generator, bound to the catalogue models it may call."""

    name: str
    function: GeneratorFunction
    models: Mapping[str, Provider]
    upstream_names: Mapping[str, str]

    async def produce(
        self, generation: Generation, request: GenerationRequest, *, cid: str, run_id: str
    ) -> Outcome:
        """Run the generator to its outcome; a stop of the run passes through untouched."""
        run = Run(
            generation,
            request,
            conversation_id=cid,
            run_id=run_id,
            models=self.models,
            upstream_names=self.upstream_names,
        )
        try:
            await self.function(run)
        except (CancelRequested, RunGone):
            raise
        except GeneratorFailure as failure:
            return Failure(failure.code, failure.message)
        except Exception as exc:
            # The text of an application's exception may hold anything (a key, a customer's
            # data): the client gets its type, the worker's log the whole traceback.
            log.exception("generator %r of run %s raised", self.name, run_id)
            return Failure(GENERATOR_ERROR, f"the generator raised {type(exc).__name__}")
        return Finish(run.finish_reason, run.usage)


def import_generators(catalogue: Catalogue) -> dict[str, GeneratorFunction]:
    """Import every generator of the catalogue; raises GeneratorImportError."""
    return {
        name: import_generator(name, spec.function)
        for name, spec in catalogue.models.items()
        if spec.provider == "generator"
    }


def bind_generators(
    functions: Mapping[str, GeneratorFunction],
    catalogue: Catalogue,
    providers: Mapping[str, Provider],
) -> dict[str, ApplicationGenerator]:
    """The generators, each able to call the catalogue's ``providers``."""
    upstream_names = {name: spec.upstream_model(name) for name, spec in catalogue.models.items()}
    return {
        name: ApplicationGenerator(name, function, providers, upstream_names)
        for name, function in functions.items()
    }
