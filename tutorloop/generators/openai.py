"""OpenAIGenerator: any OpenAI-compatible endpoint (a vLLM or SGLang server, a hosted API) as a
teacher or mentor. It has no weights of its own, so it never plays the student.

- Generation goes through `/chat/completions`, so the server applies its own chat template. A
  server that returns fewer than `n` choices is asked again for the rest; one that is neither vLLM
  nor OpenAI's own API also gets the length as `max_tokens` (llama-cpp-python reads only that).
- Whether the server is vLLM is asked once (`GET /version`). Only then does the request ask for
  `logprobs` and vLLM's `return_token_ids`, so completions carry ids and log-probs; other
  servers give text only (nothing downstream reads a teacher's or mentor's sampled log-probs).
- Scoring needs prompt log-probs, which only vLLM's server returns: its `/tokenize` renders the
  context to ids, then context + target ids go to `/completions` with `prompt_logprobs` and
  `max_tokens=1`, as the in-process vLLM generator does. Other servers get a one-line UserError.
- The API key is read from the environment variable that config names; it goes into the
  Authorization header and nowhere else. Standard-library HTTP, each request in a worker thread,
  so up to `max_batch_size` requests are in flight and the server batches them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from tutorloop.errors import UserError
from tutorloop.generators.stops import stop_length
from tutorloop.generators.vllm import target_scores
from tutorloop.types import Completion, Message, SamplingParams, TokenScores


class EndpointAnswerError(UserError):
    """The endpoint answered, but with an HTTP error status or with a body that is not JSON."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Logprob:
    """One entry of vLLM's `prompt_logprobs` as its server writes it to JSON."""

    logprob: float
    rank: int | None


class OpenAIGenerator:
    def __init__(self, model: str, *, base_url: str, api_key_env: str | None = None, max_batch_size: int = 32,
                 seed: int = 0, timeout: float = 300.0) -> None:
        """model: the name the endpoint serves; base_url: as for the OpenAI client, e.g.
        `http://host:8000/v1` (vLLM's /version and /tokenize live at the root, without /v1)."""
        self.model, self.base_url = model, base_url.rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        self.legacy_max_tokens = urllib.parse.urlparse(self.base_url).hostname != "api.openai.com"
        self.headers = {"Content-Type": "application/json"} | _authorization(api_key_env)
        self.seed, self.timeout, self.calls = seed, timeout, 0
        self.pool = ThreadPoolExecutor(max_workers=max_batch_size, thread_name_prefix="openai-generator")
        self.is_vllm: bool | None = None
        self.version = 0  # never changes: an endpoint takes no weights from us
        self.counters = {"gen_tokens": 0.0, "gen_seconds": 0.0, "score_tokens": 0.0, "score_seconds": 0.0}
        self.in_flight = {"gen": 0, "score": 0}
        self.busy_since = {"gen": 0.0, "score": 0.0}

    async def generate(self, prompts: Sequence[Sequence[Message]], params: SamplingParams) -> list[Completion]:
        vllm = await self._server_is_vllm()
        url = f"{self.base_url}/chat/completions"
        groups = await asyncio.gather(*(self._choices(url, p, params, vllm) for p in prompts))
        return [chat_completion(choice, params.stop_regex, self.version) for group in groups for choice in group]

    async def _choices(self, url: str, messages: Sequence[Message], params: SamplingParams,
                       vllm: bool) -> list[dict[str, Any]]:
        """n choices for one prompt. A server that returns fewer (llama-cpp-python's ignores `n`) is
        asked again for the rest, one request at a time, each with its own seed."""
        choices: list[dict[str, Any]] = []
        while len(choices) < params.n:
            body = self._chat_body(messages, params, vllm, params.n - len(choices))
            reply = await self._call("gen", "POST", url, body)
            got = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if not got:
                raise UserError(f"endpoint {url} returned no choices")
            self.counters["gen_tokens"] += float((reply.get("usage") or {}).get("completion_tokens", 0))
            choices += got[:params.n - len(choices)]
        return choices

    async def score(self, prompts: Sequence[Sequence[Message]], target_ids: Sequence[Sequence[int]],
                    top_k: int) -> list[TokenScores]:
        if not await self._server_is_vllm():
            raise self._cannot_score()
        return list(await asyncio.gather(*(self._score_one(p, list(t), top_k) for p, t in zip(prompts, target_ids))))

    async def load_weights(self, weights: object, version: int | None = None) -> int:
        raise UserError(f"endpoint {self.base_url} serves fixed weights; the student needs a model generator")

    async def stats(self) -> dict[str, float]:
        counters = dict(self.counters)
        self.counters = dict.fromkeys(self.counters, 0.0)
        return counters

    async def sampling_state(self) -> dict[str, int]:
        return {"calls": self.calls}  # request seeds derive from it (as far as the endpoint honours seeds)

    async def load_sampling_state(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def _chat_body(self, messages: Sequence[Message], params: SamplingParams, vllm: bool, n: int) -> dict[str, Any]:
        self.calls += 1  # a new seed per request, reproducible for a given call order (as HFGenerator)
        body = {"model": self.model, "messages": list(messages), "n": n, "temperature": params.temperature,
                "top_p": params.top_p, "max_completion_tokens": params.max_new_tokens,
                "seed": self.seed * 1_000_003 + self.calls}
        if vllm:  # hosted APIs refuse unknown fields, and some models refuse logprobs
            body |= {"logprobs": True, "return_token_ids": True}
        elif self.legacy_max_tokens:  # llama-cpp-python reads only max_tokens; OpenAI's o-models refuse it
            body["max_tokens"] = params.max_new_tokens
        return body

    async def _score_one(self, messages: Sequence[Message], target: list[int], top_k: int) -> TokenScores:
        if not target:
            return TokenScores(logprobs=())
        tokenized = await self._call("score", "POST", f"{self.root}/tokenize",
                                     {"model": self.model, "messages": list(messages), "add_generation_prompt": True})
        context = list(tokenized["tokens"])
        reply = await self._call("score", "POST", f"{self.base_url}/completions",
                                 {"model": self.model, "prompt": context + target, "max_tokens": 1,
                                  "temperature": 1.0, "prompt_logprobs": top_k, "add_special_tokens": False})
        rows = (reply.get("choices") or [{}])[0].get("prompt_logprobs")
        if not rows or len(rows) != len(context) + len(target):
            raise self._cannot_score()
        self.counters["score_tokens"] += len(target)
        return target_scores(json_prompt_logprobs(rows), context, target, top_k)

    async def _server_is_vllm(self) -> bool:
        if self.is_vllm is None:  # concurrent first calls may each ask; the answers agree
            try:
                info = await self._call("gen", "GET", f"{self.root}/version")
                self.is_vllm = isinstance(info, dict) and "version" in info
            except EndpointAnswerError:
                self.is_vllm = False
        return self.is_vllm

    async def _call(self, kind: str, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """One request in a worker thread. The endpoint counts as busy while any request of this
        kind is in flight, so overlapping requests are not counted twice in `<kind>_seconds`."""
        if self.in_flight[kind] == 0:
            self.busy_since[kind] = time.perf_counter()
        self.in_flight[kind] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._request, method, url, body)
        finally:
            self.in_flight[kind] -= 1
            if self.in_flight[kind] == 0:
                self.counters[f"{kind}_seconds"] += time.perf_counter() - self.busy_since[kind]

    def _request(self, method: str, url: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise EndpointAnswerError(f"endpoint {url} answered HTTP {exc.code}: {_error_detail(exc)}",
                                      exc.code) from None
        except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, timed out
            raise UserError(f"endpoint {url} is not reachable: {_one_line(getattr(exc, 'reason', exc))}") from None
        except json.JSONDecodeError:
            raise EndpointAnswerError(f"endpoint {url} did not answer with JSON", 200) from None

    def _cannot_score(self) -> UserError:
        return UserError(f"endpoint {self.base_url} does not return prompt log-probs; it cannot score for OPD")


def chat_completion(choice: dict[str, Any], stop_regex: str | None, version: int) -> Completion:
    """A Completion from one `/chat/completions` choice: ids and log-probs only when the server
    sent ids (vLLM's `token_ids`) with one log-prob entry per id."""
    text = (choice.get("message") or {}).get("content") or ""
    ids = list(choice.get("token_ids") or [])
    entries = ((choice.get("logprobs") or {}).get("content")) or []
    if not ids or len(entries) != len(ids):
        ids, entries = [], []
    logps = [float(e["logprob"]) for e in entries]
    pieces = [e["token"] for e in entries]
    reason = "length" if choice.get("finish_reason") == "length" else "stop"
    if stop_regex and pieces:
        if (cut := stop_length(len(pieces), lambda k: "".join(pieces[:k]), stop_regex)) is not None:
            ids, logps, text, reason = ids[:cut], logps[:cut], "".join(pieces[:cut]), "stop"
    elif stop_regex and (match := re.search(stop_regex, text)):
        text, reason = text[:match.end()], "stop"
    return Completion(text=text.strip(), token_ids=tuple(ids), logprobs=tuple(logps), finish_reason=reason,
                      policy_version=version)


def json_prompt_logprobs(rows: Sequence[dict[str, Any] | None]) -> list[dict[int, Logprob] | None]:
    """vLLM's JSON `prompt_logprobs` (token-id strings as keys) as the engine's dicts. A log-prob
    that did not survive JSON (-inf written as null) becomes vLLM's own floor, -9999."""
    return [None if row is None else
            {int(token): Logprob(-9999.0 if e.get("logprob") is None else float(e["logprob"]), e.get("rank"))
             for token, e in row.items()}
            for row in rows]


def _authorization(api_key_env: str | None) -> dict[str, str]:
    if api_key_env is None:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise UserError(f"api_key_env: the environment variable {api_key_env} is not set")
    return {"Authorization": f"Bearer {key}"}


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
        detail = payload.get("error", payload) if isinstance(payload, dict) else payload
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
    except (json.JSONDecodeError, OSError):
        detail = exc.reason
    return _one_line(detail)[:300]


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())
