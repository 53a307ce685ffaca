"""A Pydantic AI agent, made durable and resumable by the broker.

The agent is written for Pydantic AI alone; the generator at the end is all the broker needs.
No network: the agent's model is Pydantic AI's own ``TestModel``, which calls each tool once
and then answers (put ``"openai:gpt-4o"`` or any model of yours in its place, or the broker's
catalogue model with ``catalogue_model(run, "gpt-4o-mini")``). Install the extra, then::

    .venv/bin/pip install -e '.[pydantic-ai]'
    BROKER_GENERATORS=support=examples.pydantic_ai_agent:support PYTHONPATH=. scripts/dev

    curl -s -X POST localhost:8000/v1/conversations/p1/messages \\
         -H 'Content-Type: application/json' \\
         -d '{"content": "Where is order 42?", "model": "support"}'
    curl -N localhost:8000/v1/conversations/p1/runs/active/stream
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_ai import Agent, RunContext
from pydantic_ai.models.test import TestModel

from workers.integrations.pydantic_ai import stream_pydantic_ai
from workers.run import Run


@dataclass
class Deps:
    customer: str


support_agent = Agent(
    TestModel(),
    deps_type=Deps,
    instructions="You answer questions about a customer's orders.",
)


@support_agent.tool
async def order_status(context: RunContext[Deps], order: int) -> dict[str, object]:
    """Where an order of the customer is."""
    return {"order": order, "customer": context.deps.customer, "status": "shipped"}


# The broker's part: a generator, registered in BROKER_GENERATORS.
async def support(run: Run) -> None:
    await stream_pydantic_ai(run, support_agent, deps=Deps(customer=run.conversation_id))
