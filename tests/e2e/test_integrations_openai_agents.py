"""OpenAI Agents SDK agents as generators, end to end: a real ``Agent`` with a tool and a
handoff, its ``Model`` the SDK's own ``ScriptedModel`` streaming Responses events (the
answer's message event by event).

The scenarios are the same for every framework (``tests/agent_scenarios.py``); this module says
what this framework's stream looks like.
"""

from __future__ import annotations

import pytest
import redis

from tests import agent_scenarios as scenarios
from tests.agent_scenarios import TOOL_CALL, WEATHER, Framework
from tests.app_agents import CALL_ID, REASONING
from tests.stack import Stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# The worker logs the agent's exception whole when a run fails: the operator's record.
RUN_FAILED = r"integrations/_common\.py.*in failing"

FRAMEWORK = Framework(
    name="openai_agents",
    generator="tests.app_agents:openai_agents_weather",
    order=[
        "delta:reasoning",
        "tool.call",
        "tool.result",
        "tool.call",
        "tool.result",
        "data:handoff",
        "delta:content",
    ],
    parts=[
        {"type": "reasoning", "text": REASONING},
        {**TOOL_CALL, "arguments": {"city": "Paris"}},
        {"type": "tool_result", "call_id": CALL_ID, "result": WEATHER, "is_error": False},
        {
            "type": "tool_call",
            "call_id": "call_handoff",
            "name": "transfer_to_writer",
            "arguments": {},
        },
        {
            "type": "tool_result",
            "call_id": "call_handoff",
            "result": {"assistant": "writer"},
            "is_error": False,
        },
        {"type": "data", "name": "handoff", "value": {"from": "triage", "to": "writer"}},
    ],
    # The SDK answers a raising tool with its own fixed text and the run goes on.
    raised_result="An error occurred while running the tool. Please try again.",
    raised_end=("run.completed", None),
    expected_tracebacks=[RUN_FAILED],
)
LIMIT_MESSAGE = "the agent reached its maximum number of turns"


async def test_the_stream_carries_the_run_in_order_and_the_snapshot_shows_it(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.events_and_parts(FRAMEWORK, stack, redis_client, prefix)


async def test_a_client_resumes_mid_answer_from_another_front(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.resume_from_another_front(FRAMEWORK, stack, redis_client, prefix)


async def test_cancel_during_the_tool_stops_it_and_starts_nothing_later(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.cancel_during_the_tool(FRAMEWORK, stack, redis_client, prefix)


async def test_cancel_during_the_text_closes_the_model_stream(
    stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.cancel_during_the_text(FRAMEWORK, stack, redis_client, prefix)


async def test_a_tool_that_raises(stack: Stack, redis_client: redis.Redis, prefix: str) -> None:
    await scenarios.a_tool_that_raises(FRAMEWORK, stack, redis_client, prefix)


async def test_the_framework_s_own_error_fails_the_run_with_a_stable_code(stack: Stack) -> None:
    await scenarios.a_framework_error(FRAMEWORK, stack, LIMIT_MESSAGE)
