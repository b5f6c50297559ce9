"""Before and after: one LCEL chain on ChatOpenAI, then on BatchedChatQwen.

    python -m langchain_qwen_fast.testing.server --port 8000 &   # or a real vLLM server
    python examples/migrate_from_chatopenai.py [--base-url URL] [--model NAME] [--n 64]

--base-url defaults to $QWEN_BASE_URL, else http://localhost:8000/v1; --model to $QWEN_MODEL,
else the first model the server lists. The "before" half needs ``pip install langchain-openai``
and is skipped without it.

The migration is the class name. What goes away: ``api_key="EMPTY"`` and the
``extra_body={"chat_template_kwargs": {"enable_thinking": False}}`` that Qwen3 needs to stop
reasoning on every call (BatchedChatQwen sends it by default). What changes underneath: ``.batch``
is one submission to a shared pool instead of a thread per input, and with ``max_tokens`` set,
plain prompts travel as lists on /v1/completions.
"""

from __future__ import annotations

import argparse
import os
import time

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_qwen_fast import BatchedChatQwen


def served_model(base_url: str) -> str:
    """The first model the server lists (vLLM: its --served-model-name)."""
    r = httpx.get(base_url.rstrip("/") + "/models", timeout=10, trust_env=False)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])


def chain_for(llm: BaseChatModel):  # type: ignore[no-untyped-def]
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one short sentence."), ("human", "What is a {thing}?")]
    )
    return prompt | llm | StrOutputParser()


def run(label: str, llm: BaseChatModel, inputs: list[dict[str, str]]) -> None:
    chain = chain_for(llm)
    t0 = time.perf_counter()
    answers = chain.batch(inputs)
    dt = time.perf_counter() - t0
    print(f"{label:<16} {len(answers)} answers in {dt:.2f} s ({len(answers) / dt:.0f}/s); "
          f"first: {answers[0][:70]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=os.environ.get("QWEN_BASE_URL", "http://localhost:8000/v1"))
    ap.add_argument("--model", default=os.environ.get("QWEN_MODEL"))
    ap.add_argument("--n", type=int, default=64, help="inputs per batch")
    args = ap.parse_args()
    model = args.model or served_model(args.base_url)
    things = ["kettle", "violin", "glacier", "compiler", "lighthouse", "sonnet", "enzyme", "harbor"]
    inputs = [{"thing": things[i % len(things)]} for i in range(args.n)]

    # -- before ----------------------------------------------------------------------------------
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        print("before: langchain-openai is not installed; skipping the ChatOpenAI half")
    else:
        before = ChatOpenAI(
            model=model, base_url=args.base_url, api_key="EMPTY", max_tokens=64, temperature=0.7,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        run("before ChatOpenAI", before, inputs)

    # -- after: the same chain, the same arguments minus the Qwen3 boilerplate -------------------
    with BatchedChatQwen(model=model, base_url=args.base_url, max_tokens=64,
                         temperature=0.7) as after:
        run("after  BatchedChatQwen", after, inputs)
        stats = after.stats()
        print(f"after: {stats['items']} items in {stats['batches']} requests; "
              f"batch sizes {stats['batch_size_histogram']}")


if __name__ == "__main__":
    main()
