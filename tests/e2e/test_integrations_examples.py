"""The framework examples in ``examples/`` run as their docstrings say, with no network."""

from __future__ import annotations

import pytest

from tests.helpers import new_cid
from tests.stack import Stack

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

EXAMPLES = {
    "support": "examples.pydantic_ai_agent:support",
    "triage": "examples.openai_agents_agent:triage_agent",
    "graph": "examples.langgraph_agent:weather_graph",
}


async def test_each_example_answers_with_its_tool_call_and_result(stack: Stack) -> None:
    stack.start(generators=",".join(f"{name}={path}" for name, path in EXAMPLES.items()))
    front = stack.fronts[0]
    for model in EXAMPLES:
        cid = new_cid(model)
        run_id = (await front.api.start_run(cid, "Weather in Paris?", model=model))["run_id"]
        async with await front.api.run_stream(cid, run_id) as client:
            events = await client.read_to_end(timeout=30)
        assert events[-1].event == "run.completed", (model, events[-1].data)
        answer = (await front.api.snapshot(cid)).json()["messages"][1]
        kinds = [part["type"] for part in answer["parts"]]
        assert {"tool_call", "tool_result", "text"} <= set(kinds), (model, kinds)
        assert kinds.index("tool_call") < kinds.index("tool_result") < len(kinds) - 1
        assert answer["content"], model
