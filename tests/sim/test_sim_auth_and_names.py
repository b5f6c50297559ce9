"""The simulator's ``--api-key`` (vLLM's: 401 ``{"error": "Unauthorized"}`` under ``/v1`` without the right
bearer token) and its served names (``Qwen/Qwen3-0.6B`` by default, aliases as vLLM's
``--served-model-name A B``), seen by a raw client, by ``BatchedChatQwen`` and by ``qwen-fast doctor``.

Covers: testing/server.py, testing/sim_engine.py, doctor/checks.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support import check

from langchain_qwen_fast import AuthenticationError, BatchedChatQwen
from langchain_qwen_fast.doctor import run_checks
from langchain_qwen_fast.testing import SimConfig, SimServer

pytestmark = pytest.mark.sim
KEY = "sim-key-2207"
BODY = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def guarded() -> Iterator[SimServer]:
    with SimServer(SimConfig(latency="zero", api_key=KEY)) as srv:
        yield srv


@pytest.mark.parametrize(("auth", "status"), [(None, 401), ("Bearer wrong", 401), (f"Basic {KEY}", 401),
                                               (f"Bearer {KEY}", 200), (f"bearer {KEY}", 200)])
def test_api_key_guards_v1_as_vllm_does(guarded: SimServer, auth: str | None, status: int) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = httpx.post(guarded.base_url + "/chat/completions", json=BODY, headers=headers, trust_env=False)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json() == {"error": "Unauthorized"}
    assert httpx.get(guarded.base_url + "/models", headers=headers, trust_env=False).status_code == status
    assert httpx.get(guarded.url + "/health", trust_env=False).status_code == 200  # not guarded, as in vLLM


def test_a_wrong_key_is_an_authentication_error_and_the_right_one_answers(guarded: SimServer) -> None:
    with BatchedChatQwen(base_url=guarded.base_url, api_key="wrong", max_tokens=4) as bad, \
            pytest.raises(AuthenticationError, match=r"HTTP 401 .*Unauthorized"):
        bad.invoke("hi")
    with BatchedChatQwen(base_url=guarded.base_url, api_key=KEY, max_tokens=4) as good:
        assert good.invoke("hi").content.startswith("[sim]")


def test_the_doctor_says_the_server_wants_a_key(guarded: SimServer) -> None:
    report = run_checks(guarded.base_url, model="Qwen/Qwen3-0.6B", api_key="wrong")
    base = check(report, "base_url")
    assert base.status == "fail" and "wants an API key" in base.finding and "--api-key" in (base.fix or "")
    assert check(run_checks(guarded.base_url, model="Qwen/Qwen3-0.6B", api_key=KEY), "base_url").status == "ok"


def test_served_names_default_to_what_vllm_serve_serves_and_aliases_answer_too() -> None:
    with SimServer(SimConfig(latency="zero", aliases=("Qwen-0.6B", "Qwen3-0.6B"))) as srv:
        ids = [m["id"] for m in httpx.get(srv.base_url + "/models", trust_env=False).json()["data"]]
        assert ids == ["Qwen/Qwen3-0.6B", "Qwen-0.6B", "Qwen3-0.6B"]
        for name in ids:
            r = httpx.post(srv.base_url + "/chat/completions", json={**BODY, "model": name}, trust_env=False)
            assert r.status_code == 200 and r.json()["model"] == "Qwen/Qwen3-0.6B"  # answers carry the first
        r = httpx.post(srv.base_url + "/chat/completions", json={**BODY, "model": "Qwen/Qwen3-8B"}, trust_env=False)
        assert r.status_code == 404 and "The model `Qwen/Qwen3-8B` does not exist." in r.text
