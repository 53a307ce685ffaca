"""Agents written with Pydantic AI, the OpenAI Agents SDK or LangGraph, run as generators.

Each integration turns its framework's own stream into the broker's events, so an existing
agent becomes durable and resumable in a few lines::

    from workers.integrations.pydantic_ai import stream_pydantic_ai

    async def support(run: Run) -> None:
        await stream_pydantic_ai(run, support_agent, deps=Deps(...))

The frameworks are optional extras (``pydantic-ai``, ``openai-agents``, ``langgraph``): importing
an integration without its extra raises an ImportError naming the extra to install. This package
imports none of them by itself.
"""
