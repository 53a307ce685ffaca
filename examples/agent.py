"""An example generator: a weather agent that thinks, calls a local tool, shows a data card,
and lets a catalogue model finish the answer.

Run it with the whole system (no network needed: the answer's last words come from the
built-in ``simulated`` model unless the client names another catalogue model)::

    BROKER_GENERATORS=weather=examples.agent:weather_agent PYTHONPATH=. scripts/dev

    curl -s -X POST localhost:8000/v1/conversations/w1/messages \\
         -H 'Content-Type: application/json' \\
         -d '{"content": "Weather in Paris?", "model": "weather"}'
    curl -N localhost:8000/v1/conversations/w1/runs/active/stream

``params`` (all optional): ``city`` (else the last capitalised word of the prompt),
``tool_seconds`` (how long the lookup takes, default 0.2), ``model`` (the catalogue model that
writes the rest, default ``simulated``) and ``model_params`` (its params, default a short
simulated answer).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anyio

from workers.run import Failure, GeneratorFailure, Run

log = logging.getLogger("examples.agent")

_FORECASTS: dict[str, dict[str, Any]] = {
    "paris": {"temp_c": 21, "sky": "sunny"},
    "london": {"temp_c": 15, "sky": "drizzly"},
    "tokyo": {"temp_c": 26, "sky": "humid"},
}


async def get_weather(city: str, seconds: float) -> dict[str, Any]:
    """The local tool: a slow lookup, as a real API or database call would be.

    Its ``finally`` says in the worker's log whether it finished: a cancelled run interrupts
    the lookup at its ``await``, and the cleanup still runs.
    """
    finished = False
    try:
        await anyio.sleep(seconds)
        forecast = _FORECASTS.get(city.lower())
        if forecast is None:
            raise LookupError(f"no forecast for {city}")
        finished = True
        return {"city": city, **forecast}
    finally:
        log.info(
            "get_weather(%r) %s", city, "finished" if finished else "stopped before it finished"
        )


def _city_in(prompt: str) -> str:
    words = re.findall(r"\b[A-Z][a-z]+\b", prompt)
    return words[-1] if words else "Paris"


async def weather_agent(run: Run) -> None:
    city = str(run.params.get("city") or _city_in(run.prompt))
    await run.reasoning(f"The user asks about the weather in {city}. I will look it up first.")

    # The tool call, its arguments streamed in pieces as a model would stream them.
    call_id = run.new_call_id()
    arguments = {"city": city}
    text = json.dumps(arguments)
    for start in range(0, len(text), 8):
        await run.tool_call_delta(call_id, "get_weather", text[start : start + 8])
    await run.tool_call(call_id, "get_weather", arguments)
    try:
        weather = await get_weather(city, float(run.params.get("tool_seconds", 0.2)))
    except LookupError as exc:
        await run.tool_result(call_id, str(exc), is_error=True)
        await run.text(f"Sorry, I have no forecast for {city}.")
        return
    await run.tool_result(call_id, weather)
    await run.data("weather_card", weather)  # a card the page can render beside the text
    await run.text(f"In {city} it is {weather['temp_c']} °C and {weather['sky']}. ")

    # The rest of the answer comes from a catalogue model, forwarded as it streams.
    model = str(run.params.get("model", "simulated"))
    model_params = run.params.get("model_params", {"tokens": 12, "interval_ms": 20})
    prompt = f"{run.prompt}\n\nThe forecast for {city}: {json.dumps(weather)}"
    end = await run.forward(run.model(model, prompt=prompt, params=model_params))
    if isinstance(end, Failure):
        raise GeneratorFailure(end.code, end.message)
    run.finish_reason = end.reason
    run.usage = end.usage
