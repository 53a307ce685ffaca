"""The agent frameworks as generators, end to end, each with its own test model: Pydantic AI
(a real ``Agent`` with a tool, its ``FunctionModel`` streaming thinking, a tool call in pieces
and text), LangGraph (a ``StateGraph`` with a ``ToolNode``, LangChain's
``GenericFakeChatModel`` streaming reasoning, tool call chunks and words) and the OpenAI Agents
SDK (an ``Agent`` with a tool and a handoff, the SDK's ``ScriptedModel`` streaming Responses
events).

The scenarios are the same for every framework (``tests/agent_scenarios.py``); this module says
what each framework's stream looks like.
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

PYDANTIC_AI = Framework(
    name="pydantic_ai",
    generator="tests.app_agents:pydantic_ai_weather",
    order=["delta:reasoning", "tool.call", "tool.result", "delta:content"],
    parts=[
        {"type": "reasoning", "text": REASONING},
        {**TOOL_CALL, "arguments": {"city": "Paris"}},
        {"type": "tool_result", "call_id": CALL_ID, "result": WEATHER, "is_error": False},
    ],
    # Pydantic AI lets a tool's exception end the run: its call gets an error result first.
    raised_result="the tool raised RuntimeError",
    raised_end=("run.failed", "tool_error"),
    expected_tracebacks=[RUN_FAILED],
    limit_message="the agent reached a usage limit",
)

LANGGRAPH = Framework(
    name="langgraph",
    generator="tests.app_agents:langgraph_weather",
    order=[
        "data:node",
        "delta:reasoning",
        "tool.call",
        "data:node",
        "tool.result",
        "data:node",
        "delta:content",
    ],
    parts=[
        {"type": "data", "name": "node", "value": {"name": "agent"}},
        {"type": "reasoning", "text": REASONING},
        {**TOOL_CALL, "arguments": {"city": "Paris"}},
        {"type": "data", "name": "node", "value": {"name": "tools"}},
        {"type": "tool_result", "call_id": CALL_ID, "result": WEATHER, "is_error": False},
        {"type": "data", "name": "node", "value": {"name": "agent"}},
    ],
    # The tool node lets a tool's exception end the run: its call gets an error result first.
    raised_result="the tool raised RuntimeError",
    raised_end=("run.failed", "tool_error"),
    expected_tracebacks=[RUN_FAILED],
    limit_message="the graph reached its recursion limit",
)

OPENAI_AGENTS = Framework(
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
    limit_message="the agent reached its maximum number of turns",
)

FRAMEWORKS = pytest.mark.parametrize(
    "framework",
    [PYDANTIC_AI, LANGGRAPH, OPENAI_AGENTS],
    ids=lambda framework: framework.name,
)


@FRAMEWORKS
async def test_the_stream_carries_the_run_in_order_and_the_snapshot_shows_it(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.events_and_parts(framework, stack, redis_client, prefix)


@FRAMEWORKS
async def test_a_client_resumes_mid_answer_from_another_front(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.resume_from_another_front(framework, stack, redis_client, prefix)


@FRAMEWORKS
async def test_cancel_during_the_tool_stops_it_and_starts_nothing_later(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.cancel_during_the_tool(framework, stack, redis_client, prefix)


@FRAMEWORKS
async def test_cancel_during_the_text_closes_the_model_stream(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.cancel_during_the_text(framework, stack, redis_client, prefix)


@FRAMEWORKS
async def test_a_tool_that_raises(
    framework: Framework, stack: Stack, redis_client: redis.Redis, prefix: str
) -> None:
    await scenarios.a_tool_that_raises(framework, stack, redis_client, prefix)


@FRAMEWORKS
async def test_the_framework_s_own_error_fails_the_run_with_a_stable_code(
    framework: Framework, stack: Stack
) -> None:
    await scenarios.a_framework_error(framework, stack)
