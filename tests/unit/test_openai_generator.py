"""OpenAIGenerator against an OpenAI-compatible server that the test starts on 127.0.0.1.

The server answers with canned but structurally faithful bodies: in `vllm` mode those of vLLM
0.33.0's server (`GET /version`, `POST /tokenize`, `/v1/chat/completions` with `token_ids` and
`logprobs.content`, `/v1/completions` with `prompt_logprobs` keyed by token-id strings); in `hosted`
mode those of a hosted API, which refuses unknown request fields and has no /version. Its "model"
is a byte-level toy: token id = byte value, and a bigram log-prob table, so scores are checkable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tutorloop.agents.protocol import Generator
from tutorloop.errors import UserError
from tutorloop.generators.openai import OpenAIGenerator
from tutorloop.graders import ANSWER_STOP
from tutorloop.types import SamplingParams

REPLY = "Mistake: 4 + 4 is 8. The answer is: 8.\nAnd then it rambles on"
PROMPT = ({"role": "system", "content": "You are a teacher."}, {"role": "user", "content": "Is 4 + 4 = 9?"})
OPENAI_FIELDS = {"model", "messages", "n", "temperature", "top_p", "max_completion_tokens", "max_tokens", "seed",
                 "logprobs", "top_logprobs", "stop"}
VOCAB = 256


@functools.cache
def toy_row(prev: int) -> tuple[float, ...]:
    """log p(· | previous token) of the server's toy model."""
    logits = [((t * 31 + prev * 17) % 97) / 8.0 for t in range(VOCAB)]
    norm = math.log(sum(math.exp(x) for x in logits))
    return tuple(x - norm for x in logits)


def toy_logprob(prev: int, token: int) -> float:
    return toy_row(prev)[token]


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def render(messages: list[dict[str, str]]) -> list[int]:
    """The server's chat template."""
    return encode("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")


class Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.seen.append(("GET", self.path, None, self.headers.get("Authorization")))
        if self.server.mode == "gateway":  # a proxy that answers every unknown path with a page
            return self._send(200, "<html>welcome</html>")
        if self.path == "/version" and self.server.mode != "hosted":
            return self._send(200, {"version": "0.33.0"})
        self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(("POST", self.path, body, self.headers.get("Authorization")))
        if self.server.key and self.headers.get("Authorization") != f"Bearer {self.server.key}":
            return self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
        route = {"/v1/chat/completions": self._chat, "/tokenize": self._tokenize, "/v1/completions": self._complete}
        hosted = self.server.mode in ("hosted", "gateway")
        if self.path not in route or (hosted and self.path == "/tokenize"):
            return self._send(404, {"detail": "Not Found"})
        if hosted and (unknown := set(body) - OPENAI_FIELDS - {"prompt", "max_tokens"}):
            message = f"Unrecognized request argument supplied: {sorted(unknown)[0]}"
            return self._send(400, {"error": {"message": message}})
        route[self.path](body)

    def _chat(self, body: dict[str, Any]) -> None:
        ids = encode(REPLY)[:body["max_completion_tokens"]]
        prompt_ids = render(body["messages"])
        choices = []
        for index in range(body["n"] if self.server.honours_n else 1):
            choice: dict[str, Any] = {
                "index": index, "message": {"role": "assistant", "content": bytes(ids).decode(), "refusal": None,
                                            "tool_calls": [], "reasoning_content": None},
                "logprobs": None, "finish_reason": "stop" if len(ids) == len(encode(REPLY)) else "length",
                "stop_reason": None}
            if body.get("logprobs"):
                prevs = [prompt_ids[-1]] + ids[:-1]
                choice["logprobs"] = {"content": [
                    {"token": chr(t), "logprob": toy_logprob(p, t), "bytes": [t], "top_logprobs": []}
                    for p, t in zip(prevs, ids)]}
            if body.get("return_token_ids"):
                choice["token_ids"] = ids
            choices.append(choice)
        self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                         "choices": choices, "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens":
                                                       len(ids) * len(choices), "total_tokens": 0},
                         "prompt_logprobs": None,
                         "prompt_token_ids": prompt_ids if body.get("return_token_ids") else None})

    def _tokenize(self, body: dict[str, Any]) -> None:
        tokens = render(body["messages"])
        self._send(200, {"count": len(tokens), "max_model_len": 4096, "tokens": tokens, "token_strs": None})

    def _complete(self, body: dict[str, Any]) -> None:
        prompt, k = body["prompt"], body.get("prompt_logprobs")
        rows: list[Any] = [None]
        for j in range(1, len(prompt)):
            logps = toy_row(prompt[j - 1])
            order = sorted(range(VOCAB), key=lambda t: -logps[t])
            row = {str(t): {"logprob": logps[t], "rank": r + 1, "decoded_token": chr(t)}
                   for r, t in enumerate(order[:k])}
            row.setdefault(str(prompt[j]), {"logprob": logps[prompt[j]], "rank": order.index(prompt[j]) + 1,
                                            "decoded_token": chr(prompt[j])})
            rows.append(row)
        served = self.server.mode == "vllm" and k is not None
        self._send(200, {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length",
                                      "stop_reason": None, "prompt_logprobs": rows if served else None}],
                         "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": 0}})

    def _send(self, status: int, payload: Any) -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    """Start a loopback server; the test sets its mode, key and whether it honours n."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.mode, httpd.key, httpd.honours_n, httpd.seen = "vllm", None, True, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def make(server: Any, **kwargs: Any) -> OpenAIGenerator:
    return OpenAIGenerator("teacher-7b", base_url=server.url, timeout=10, **kwargs)


def test_generate_from_vllm_returns_ids_and_logprobs(server):
    gen = make(server, seed=2)
    assert isinstance(gen, Generator)
    outs = asyncio.run(gen.generate([PROMPT], SamplingParams(temperature=0.5, max_new_tokens=400, n=2)))
    assert len(outs) == 2 and outs[0].text == REPLY and outs[0].token_ids == tuple(encode(REPLY))
    first = render(list(PROMPT))[-1]
    assert outs[0].logprobs[0] == toy_logprob(first, encode(REPLY)[0]) and len(outs[0].logprobs) == len(REPLY)
    (_, path, body, _) = [s for s in server.seen if s[1] == "/v1/chat/completions"][0]
    assert body["messages"] == list(PROMPT) and body["n"] == 2 and body["max_completion_tokens"] == 400
    assert body["logprobs"] is True and body["return_token_ids"] is True and body["model"] == "teacher-7b"
    assert body["seed"] == 2 * 1_000_003 + 1 and asyncio.run(gen.sampling_state()) == {"calls": 1}
    stats = asyncio.run(gen.stats())
    assert stats["gen_tokens"] == 2 * len(REPLY) and stats["gen_seconds"] > 0


def test_stop_regex_cuts_tokens_and_text_together(server):
    gen = make(server)
    (out,) = asyncio.run(gen.generate([PROMPT], SamplingParams(max_new_tokens=400, stop_regex=ANSWER_STOP)))
    assert out.text == "Mistake: 4 + 4 is 8. The answer is: 8." and out.finish_reason == "stop"
    assert bytes(out.token_ids).decode() == out.text + "\n" and len(out.logprobs) == len(out.token_ids)
    (short,) = asyncio.run(gen.generate([PROMPT], SamplingParams(max_new_tokens=5)))
    assert short.finish_reason == "length" and short.text == REPLY[:5]


@pytest.mark.parametrize("mode", ["hosted", "gateway"])
def test_hosted_api_gets_plain_requests_and_gives_text_only(server, mode):
    server.mode = mode
    (out,) = asyncio.run(make(server).generate([PROMPT], SamplingParams(max_new_tokens=400, stop_regex=ANSWER_STOP)))
    assert out.text == "Mistake: 4 + 4 is 8. The answer is: 8." and out.token_ids == () and out.logprobs == ()
    body = [s[2] for s in server.seen if s[1] == "/v1/chat/completions"][0]
    assert set(body) <= OPENAI_FIELDS and "logprobs" not in body


def test_score_through_prompt_logprobs(server):
    gen = make(server)
    target = encode("The answer is 8")
    (score,) = asyncio.run(gen.score([PROMPT], [target], top_k=3))
    context = render(list(PROMPT))
    prevs = [context[-1]] + target[:-1]
    assert score.logprobs == pytest.approx([toy_logprob(p, t) for p, t in zip(prevs, target)])
    assert all(len(row) == 3 for row in score.topk_ids) and len(score.topk_ids) == len(target)
    best = max(range(VOCAB), key=lambda t: toy_logprob(context[-1], t))
    assert score.topk_ids[0][0] == best and score.topk_logprobs[0][0] == pytest.approx(toy_logprob(context[-1], best))
    body = [s[2] for s in server.seen if s[1] == "/v1/completions"][0]
    assert body["prompt"] == context + target and body["max_tokens"] == 1 and body["prompt_logprobs"] == 3
    assert body["add_special_tokens"] is False  # the ids are final: no BOS in front
    assert asyncio.run(gen.score([PROMPT], [[]], top_k=3))[0].logprobs == ()


@pytest.mark.parametrize("mode", ["hosted", "no_prompt_logprobs"])
def test_an_endpoint_that_cannot_score_is_a_one_line_error(server, mode):
    server.mode = mode
    with pytest.raises(UserError) as info:
        asyncio.run(make(server).score([PROMPT], [[65, 66]], top_k=2))
    message = str(info.value)
    assert message == f"endpoint {server.url} does not return prompt log-probs; it cannot score for OPD"


def test_a_down_endpoint_is_a_one_line_error_naming_the_url():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen = OpenAIGenerator("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=5)
    with pytest.raises(UserError) as info:
        asyncio.run(gen.generate([PROMPT], SamplingParams()))
    assert f"http://127.0.0.1:{port}" in str(info.value) and "not reachable" in str(info.value)
    assert "\n" not in str(info.value)


def test_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    server.key = "sk-test-secret"
    monkeypatch.setenv("TUTORLOOP_TEST_KEY", "sk-test-secret")
    asyncio.run(make(server, api_key_env="TUTORLOOP_TEST_KEY").generate([PROMPT], SamplingParams(max_new_tokens=4)))
    assert server.seen[-1][3] == "Bearer sk-test-secret"
    monkeypatch.setenv("TUTORLOOP_TEST_KEY", "sk-wrong")
    with pytest.raises(UserError) as info:
        asyncio.run(make(server, api_key_env="TUTORLOOP_TEST_KEY").generate([PROMPT], SamplingParams()))
    assert "HTTP 401" in str(info.value) and "sk-wrong" not in str(info.value)
    monkeypatch.delenv("TUTORLOOP_TEST_KEY")
    with pytest.raises(UserError, match="TUTORLOOP_TEST_KEY is not set"):
        make(server, api_key_env="TUTORLOOP_TEST_KEY")


@pytest.mark.parametrize("mode", ["vllm", "hosted"])
def test_a_server_that_ignores_n_is_asked_again_for_the_rest(server, mode):
    server.mode, server.honours_n = mode, False  # llama-cpp-python's server returns one choice whatever n is
    outs = asyncio.run(make(server).generate([PROMPT, PROMPT[1:]], SamplingParams(n=3, max_new_tokens=6)))
    assert len(outs) == 6 and all(o.text == REPLY[:6] for o in outs)
    bodies = [s[2] for s in server.seen if s[1] == "/v1/chat/completions"]
    assert sorted(b["n"] for b in bodies) == [1, 1, 2, 2, 3, 3] and len({b["seed"] for b in bodies}) == 6
    assert all(("max_tokens" in b) == (mode == "hosted") for b in bodies)  # vLLM reads max_completion_tokens


def test_openais_own_api_never_gets_max_tokens():
    gen = OpenAIGenerator("gpt-x", base_url="https://api.openai.com/v1")
    body = gen._chat_body(list(PROMPT), SamplingParams(max_new_tokens=7), vllm=False, n=1)
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body


def test_an_endpoint_takes_no_weights(server):
    with pytest.raises(UserError, match="fixed weights"):
        asyncio.run(make(server).load_weights([], version=1))


def test_config_rules_for_endpoints(tmp_path):
    from tutorloop.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("agents: {student: {}, teacher: {}, mentor: {}}\n")
    teacher = ["agents.teacher.generator.kind=openai", "agents.teacher.model=qwen-7b",
               "agents.teacher.generator.base_url=http://10.0.0.5:8000/v1",
               "agents.teacher.generator.api_key_env=TEACHER_KEY"]
    cfg = load_config(path, teacher)
    assert cfg.agents["teacher"].generator.api_key_env == "TEACHER_KEY"
    with pytest.raises(UserError, match="trained agent needs a model generator .* not `openai`"):
        load_config(path, [o.replace("teacher", "student", 1) for o in teacher])
    with pytest.raises(UserError, match="agents.teacher.generator.base_url: Field required"):
        load_config(path, teacher[:2])
    with pytest.raises(UserError, match="needs `model`"):
        load_config(path, [teacher[0], teacher[2]])


def test_config_fields_reach_the_openai_generator():
    from tutorloop.agents import spawn_generator
    from tutorloop.config import AgentConfig

    class Recorder:
        def spawn(self, cls, *args, resources=None, **kwargs):
            return cls, args, kwargs

    spec = AgentConfig(generator={"kind": "openai", "base_url": "http://10.0.0.5:8000/v1", "api_key_env": "K"},
                       model="qwen-7b")
    cls, args, kwargs = spawn_generator(Recorder(), spec, seed=4)
    assert cls is OpenAIGenerator and args == ("qwen-7b",)
    assert kwargs == {"base_url": "http://10.0.0.5:8000/v1", "api_key_env": "K", "max_batch_size": 32, "seed": 4}
