"""Structured extraction into a pydantic model, over a batch of texts.

    python -m langchain_qwen_fast.testing.server --port 8000 &   # or a real vLLM server
    python examples/structured_extraction.py [--base-url URL] [--model NAME] [--n 8]

--base-url defaults to $QWEN_BASE_URL, else http://localhost:8000/v1; --model to $QWEN_MODEL,
else the one model the server serves (BatchedChatQwen asks it).

``with_structured_output(Person)`` uses ``response_format={"type": "json_schema", ...}`` (the
default method), so the server's grammar engine (xgrammar in vLLM) guarantees JSON that fits the
schema; the parser turns it into ``Person``. ``.batch`` over the texts is one submission, and
``return_exceptions=True`` keeps one bad answer from failing the rest. ``include_raw=True``
returns the AIMessage next to the parsed value (and a parsing error instead of raising).
"""

from __future__ import annotations

import argparse
import os

from pydantic import BaseModel, Field

from langchain_qwen_fast import BatchedChatQwen


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="The person's full name")
    age: int | None = Field(default=None, description="Age in years, if the text says")
    city: str | None = Field(default=None, description="Where they live, if the text says")


TEXTS = [
    "Ada Lovelace, 36, lived in London and wrote the first published program.",
    "Our new hire, Kenji Watanabe, moved from Osaka last spring.",
    "Grace Hopper was 79 when she retired from the Navy.",
    "Lars Nilsson (52) runs a bakery in Malmö.",
    "The keynote was given by Amara Okafor of Lagos.",
    "Rosa Jimenez turns 30 next week.",
    "Tomás Novák, a 44-year-old engineer, commutes to Brno.",
    "Mei Lin signed the contract.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=os.environ.get("QWEN_BASE_URL", "http://localhost:8000/v1"))
    ap.add_argument("--model", default=os.environ.get("QWEN_MODEL"))
    ap.add_argument("--n", type=int, default=len(TEXTS), help="number of texts (cycled)")
    args = ap.parse_args()
    named = {"model": args.model} if args.model else {}  # else QWEN_MODEL, else what the server serves
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.n)]
    prompts = [f"Extract the person from this text.\n\n{t}" for t in texts]

    with BatchedChatQwen(**named, base_url=args.base_url, max_tokens=256,
                         temperature=0) as model:
        extractor = model.with_structured_output(Person)
        people = extractor.batch(prompts, return_exceptions=True)
        failed = 0
        for text, person in zip(texts, people, strict=True):
            if isinstance(person, Exception):
                failed += 1
                print(f"  ! {text[:40]!r}: {type(person).__name__}: {person}")
            else:
                print(f"  {text[:40]!r:<44} -> {person!r}")

        raw = model.with_structured_output(Person, include_raw=True).invoke(prompts[0])
        usage = raw["raw"].usage_metadata or {}
        print(f"include_raw: parsed={raw['parsed']!r}, parsing_error={raw['parsing_error']}, "
              f"output_tokens={usage.get('output_tokens')}")
        print(f"{len(people) - failed}/{len(people)} extracted")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
