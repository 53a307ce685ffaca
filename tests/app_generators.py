"""Small generators the tests register through ``BROKER_GENERATORS``, as an application would.

The worker processes import them from ``tests.app_generators`` (the repository root is on
their ``PYTHONPATH``).
"""

from __future__ import annotations

import json

from workers.run import Failure, GeneratorFailure, Run, Usage

SECRET = "db-password-7f3a9c1e"


async def echo(run: Run) -> None:
    """Answers with its own input, so a test can see what a generator is given."""
    await run.text(
        json.dumps(
            {
                "prompt": run.prompt,
                "history": [[m.role, m.content] for m in run.history],
                "params": run.params,
                "conversation_id": run.conversation_id,
                "run_id": run.run_id,
                "models": run.models,
            }
        )
    )
    run.finish_reason = "echoed"
    run.usage = Usage(input_tokens=len(run.prompt), output_tokens=1)


async def raises(run: Run) -> None:
    await run.text("partial ")
    raise RuntimeError(f"could not connect with {SECRET}")


async def refuses(run: Run) -> None:
    raise GeneratorFailure("quota_exceeded", "You have used up today's questions.")


async def busy(run: Run) -> None:
    """Emits forever and never awaits anything else."""
    while True:
        await run.text("x ")


async def model_with_tools(run: Run) -> None:
    """Calls a catalogue model with tools, forwards its output, then answers each call."""
    end = await run.forward(run.model(run.params["model"], params={"tools": run.params["tools"]}))
    if isinstance(end, Failure):
        raise GeneratorFailure(end.code, end.message)
    run.finish_reason = end.reason


async def collects(run: Run) -> None:
    """Reads a model's answer without forwarding it, then reports what it read."""
    text, calls, end = await run.collect(
        run.model(run.params["model"], params={"tools": run.params["tools"]})
    )
    await run.data(
        "collected",
        {
            "text": text,
            "calls": [[c.call_id, c.name, c.arguments] for c in calls],
            "end": type(end).__name__,
        },
    )


async def tools_and_data(run: Run) -> None:
    """Every kind of output a UI message stream carries: reasoning, text, a streamed tool call
    and its result, a whole call whose tool failed, a data part, then more text."""
    await run.reasoning("The user wants the weather.")
    await run.text("Let me look. ")
    await run.tool_call_delta("call_weather", "weather", '{"city": ')
    await run.tool_call_delta("call_weather", "weather", '"Paris"}')
    await run.tool_call("call_weather", "weather", {"city": "Paris"})
    await run.tool_result("call_weather", {"celsius": 21})
    await run.tool_call("call_clock", "clock", {"zone": "CET"})
    await run.tool_result("call_clock", "the clock is broken", is_error=True)
    await run.data("citation", {"url": "https://weather.example/paris", "title": "Paris"})
    await run.text("It is 21 degrees in Paris.")
