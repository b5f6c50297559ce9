"""Marking a stream's final chunk, sync and async, without losing one when the stream fails.

A chunk is held back until the next one arrives, so that the final chunk can be marked
``chunk_position="last"`` (LangChain merges usage and ends the message on it). When the stream fails,
the held chunk still reaches the caller before the error: every chunk received is handed out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk


def _last(chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    if isinstance(chunk.message, AIMessageChunk):
        chunk.message.chunk_position = "last"
    return chunk


def mark_last(chunks: Iterator[ChatGenerationChunk | None]) -> Iterator[ChatGenerationChunk]:
    prev = None
    try:
        for c in chunks:
            if c is None:
                continue
            if prev is not None:
                yield prev
            prev = c
    except Exception:
        if prev is not None:
            yield prev
        raise
    if prev is not None:
        yield _last(prev)


async def amark_last(chunks: AsyncIterator[ChatGenerationChunk | None]) -> AsyncIterator[ChatGenerationChunk]:
    prev = None
    try:
        async for c in chunks:
            if c is None:
                continue
            if prev is not None:
                yield prev
            prev = c
    except Exception:
        if prev is not None:
            yield prev
        raise
    if prev is not None:
        yield _last(prev)
