"""An OpenAI Agents SDK agent with a tool and a handoff, made durable and resumable.

The agents are written for the SDK alone; the generator at the end is all the broker needs.
No network: each run gives the agents the SDK's own ``ScriptedModel`` (a call of the tool, a
handoff to the writer, then the answer); with a real model, pass ``triage`` as it is. Tracing
is off, as it would send the run to OpenAI. Install the extra, then::

    .venv/bin/pip install -e '.[openai-agents]'
    BROKER_GENERATORS=triage=examples.openai_agents_agent:triage_agent PYTHONPATH=. scripts/dev

    curl -s -X POST localhost:8000/v1/conversations/o1/messages \\
         -H 'Content-Type: application/json' \\
         -d '{"content": "Weather in Paris?", "model": "triage"}'
    curl -N localhost:8000/v1/conversations/o1/runs/active/stream
"""

from __future__ import annotations

from agents import Agent, RunConfig, function_tool
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

from workers.integrations.openai_agents import stream_openai_agent
from workers.run import Run


@function_tool
async def get_weather(city: str) -> dict[str, object]:
    """The current weather of a city."""
    return {"city": city, "sky": "sunny", "celsius": 21}


writer = Agent(name="writer", instructions="Write a short, friendly answer.")
triage = Agent(
    name="triage",
    instructions="Look the weather up, then hand off to the writer.",
    tools=[get_weather],
    handoffs=[writer],
)


def scripted() -> ScriptedModel:
    """What a model would answer, for a run without network."""
    return ScriptedModel(
        [
            ModelStep(output=[function_call("get_weather", {"city": "Paris"}, call_id="call_1")]),
            ModelStep(output=[function_call("transfer_to_writer", {}, call_id="call_2")]),
            ModelStep(output=[assistant_message("It is 21 °C and sunny in Paris.")]),
        ]
    )


# The broker's part: a generator, registered in BROKER_GENERATORS.
async def triage_agent(run: Run) -> None:
    model = scripted()  # with a real model: stream_openai_agent(run, triage)
    offline = triage.clone(model=model, handoffs=[writer.clone(model=model)])
    await stream_openai_agent(run, offline, run_config=RunConfig(tracing_disabled=True))
