"""A LangGraph tool-calling agent with two tools on BatchedChatQwen.

    python -m langchain_qwen_fast.testing.server --port 8000 &   # or a real vLLM server
    python examples/agent_with_tools.py [--base-url URL] [--model NAME] [--question TEXT]

--base-url defaults to $QWEN_BASE_URL, else http://localhost:8000/v1; --model to $QWEN_MODEL,
else the one model the server serves (BatchedChatQwen asks it). Needs ``langgraph``. On vLLM, tool calls need
``--enable-auto-tool-choice --tool-call-parser hermes`` (``qwen-fast doctor`` checks it).

The graph is the classic loop, written out: the model node answers or asks for tools, the
ToolNode runs them, and ``tools_condition`` stops when an answer has no tool calls. The model is
bound once with ``bind_tools`` (tool_choice "auto"); tool calls run with thinking off, the
package default. The simulator calls every tool whose name appears in the question, then
answers from the tool results.
"""

from __future__ import annotations

import argparse
import os

from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langchain_qwen_fast import BatchedChatQwen


@tool
def get_weather(city: str) -> str:
    """Today's weather for a city."""
    return f"{city}: 21 °C and sunny"


@tool
def convert_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return round(celsius * 9 / 5 + 32, 1)


def build_agent(model: BatchedChatQwen):  # type: ignore[no-untyped-def]
    tools = [get_weather, convert_to_fahrenheit]
    llm = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, list]:  # type: ignore[type-arg]
        return {"messages": [llm.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)  # -> "tools" or END
    graph.add_edge("tools", "agent")
    return graph.compile()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=os.environ.get("QWEN_BASE_URL", "http://localhost:8000/v1"))
    ap.add_argument("--model", default=os.environ.get("QWEN_MODEL"))
    ap.add_argument("--question", default="What is the weather in Paris? Use get_weather, then "
                    "convert_to_fahrenheit on the temperature.")
    args = ap.parse_args()
    named = {"model": args.model} if args.model else {}  # else QWEN_MODEL, else what the server serves

    with BatchedChatQwen(**named, base_url=args.base_url, max_tokens=512,
                         temperature=0.7) as model:
        agent = build_agent(model)
        result = agent.invoke({"messages": [HumanMessage(args.question)]},
                              config={"recursion_limit": 10})
        for msg in result["messages"]:
            calls = getattr(msg, "tool_calls", None)
            detail = ", ".join(f"{c['name']}({c['args']})" for c in calls) if calls else msg.content
            print(f"{msg.type:>5}: {str(detail)[:110]}")


if __name__ == "__main__":
    main()
