"""A LangGraph graph with a tool node, made durable and resumable by the broker.

The graph is written for LangGraph alone; the generator at the end is all the broker needs.
No network: its chat model is LangChain's own ``FakeMessagesListChatModel`` (a call of the
tool, then the answer); put ``ChatOpenAI(...).bind_tools(tools)`` or the broker's catalogue
model (``catalogue_chat_model(run, "gpt-4o-mini")``) in its place. Install the extra, then::

    .venv/bin/pip install -e '.[langgraph]'
    BROKER_GENERATORS=graph=examples.langgraph_agent:weather_graph PYTHONPATH=. scripts/dev

    curl -s -X POST localhost:8000/v1/conversations/g1/messages \\
         -H 'Content-Type: application/json' \\
         -d '{"content": "Weather in Paris?", "model": "graph"}'
    curl -N localhost:8000/v1/conversations/g1/runs/active/stream
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from workers.integrations.langgraph import stream_langgraph
from workers.run import Run


@tool
async def get_weather(city: str) -> dict[str, Any]:
    """The current weather of a city."""
    return {"city": city, "sky": "sunny", "celsius": 21}


model = FakeMessagesListChatModel(
    responses=[
        AIMessage(
            content="Let me look that up.",
            tool_calls=[{"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}],
        ),
        AIMessage(content="It is 21 °C and sunny in Paris."),
    ]
)


async def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [await model.ainvoke(state["messages"])]}


builder = StateGraph(MessagesState)
builder.add_node("agent", agent)
builder.add_node("tools", ToolNode([get_weather]))
builder.add_edge(START, "agent")
builder.add_conditional_edges("agent", tools_condition)
builder.add_edge("tools", "agent")
graph = builder.compile()


# The broker's part: a generator, registered in BROKER_GENERATORS.
async def weather_graph(run: Run) -> None:
    await stream_langgraph(run, graph)
