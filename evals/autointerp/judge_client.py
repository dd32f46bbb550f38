"""The judge as the eval sees it: one ``ask`` for any OpenAI-compatible chat endpoint, through the cache.

A cache hit never touches the network (the local server is not even started). A miss is sent with
bounded retries and exponential backoff on transient failures (connection, timeout, rate limit, 5xx);
a wrong key or an unknown model fails at once. Every failure is one line naming the setting to fix.
Token counts are kept for this run's requests and for the answers the cache served.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Self

import openai

from evals.autointerp.config import AutointerpConfig
from evals.autointerp.judge_cache import JudgeCache, request_key
from evals.autointerp.judge_server import MODEL_NAME, LocalJudgeServer, answer_bias
from evals.common import reason

SAEBENCH_JUDGE = "gpt-4o-mini"
BASE_URL_ENV, MODEL_ENV = "SAEPIPE_JUDGE_BASE_URL", "SAEPIPE_JUDGE_MODEL"
TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)
FORMAT_TEMPERATURE = 0.7


class JudgeError(RuntimeError):
    """A judge failure the user fixes in the config or the environment (one line)."""


@dataclass
class Usage:
    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, usage: dict[str, int], cached: bool) -> None:
        with self.lock:
            if cached:
                self.cache_hits += 1
                self.cached_prompt_tokens += usage.get("prompt_tokens", 0)
                self.cached_completion_tokens += usage.get("completion_tokens", 0)
            else:
                self.requests += 1
                self.prompt_tokens += usage.get("prompt_tokens", 0)
                self.completion_tokens += usage.get("completion_tokens", 0)


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None
    """None: the local server, started on the first cache miss."""
    model: str
    key_env: str


def endpoint(p: AutointerpConfig) -> Endpoint:
    """Where the judge is: the config's setting, else the environment, else SAEBench's OpenAI default."""
    if p.judge_backend == "local":  # a base URL here: a local server that is already running (a test's)
        return Endpoint(p.judge_base_url, MODEL_NAME, p.judge_api_key_env)
    return Endpoint(p.judge_base_url or os.environ.get(BASE_URL_ENV) or None,
                    p.judge_model or os.environ.get(MODEL_ENV) or SAEBENCH_JUDGE, p.judge_api_key_env)  # fmt: skip


class Judge:
    """Cached, retried chat completions, safe to call from ``judge_concurrency`` threads; a context manager
    (it may own the local server)."""

    def __init__(self, p: AutointerpConfig, cache: JudgeCache | None = None):
        self.p, self.cache, self.where = p, cache if cache is not None else JudgeCache(), endpoint(p)  # an empty cache is falsy
        self.usage = Usage()
        self.stack = ExitStack()
        self.client: openai.OpenAI | None = None
        self.client_lock = threading.Lock()
        self.server_start_seconds: float | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    @property
    def model_id(self) -> str:
        return self.where.model

    def _client(self) -> openai.OpenAI:
        with self.client_lock:
            if self.client is None:
                base_url, key = self.where.base_url, os.environ.get(self.where.key_env)
                if self.p.judge_backend == "local":
                    key = "local"
                    if base_url is None:
                        server = self.stack.enter_context(LocalJudgeServer())
                        self.server_start_seconds = server.start_seconds
                        base_url = server.base_url
                if not key:
                    raise JudgeError(f"evals.autointerp: no judge API key: set ${self.where.key_env} "
                                     "(evals.autointerp.judge_api_key_env names the variable)")  # fmt: skip
                self.client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=self.p.judge_timeout_s)
            return self.client

    def ask(self, messages: list[dict[str, str]], max_tokens: int, attempt: int = 0, answer_chars: str | None = None) -> str:
        """The judge's answer (from the cache when asked before). ``attempt`` > 0: a format retry, sampled.
        ``answer_chars``: the characters a well-formed answer uses; the local judge is held to them with
        OpenAI's ``logit_bias`` (token ids are its own tokenizer's, so a remote judge is left free)."""
        temperature = self.p.judge_temperature if attempt == 0 else FORMAT_TEMPERATURE
        request = {"model": self.where.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": temperature, "seed": self.p.random_seed + attempt}  # fmt: skip
        if answer_chars and self.p.judge_backend == "local":
            request["logit_bias"] = answer_bias(answer_chars)
        key = request_key(request)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.add(hit["usage"], cached=True)
            return hit["content"]
        content, usage = self._send(request)
        self.cache.put(key, {"request": request, "content": content, "usage": usage, "base_url": self.where.base_url})
        self.usage.add(usage, cached=False)
        return content

    def _send(self, request: dict[str, Any]) -> tuple[str, dict[str, int]]:
        client = self._client()
        where = f"judge {self.where.model} at {client.base_url}"
        for attempt in range(self.p.judge_max_retries + 1):
            try:
                result = client.chat.completions.create(**request, stream=False)
                break
            except TRANSIENT as exc:
                if attempt == self.p.judge_max_retries:
                    raise JudgeError(
                        f"evals.autointerp: {where} failed {attempt + 1} times ({reason(exc)}); check "
                        f"judge_base_url / ${BASE_URL_ENV} or raise judge_max_retries / judge_timeout_s"
                    ) from None
                time.sleep(min(30.0, 2.0**attempt))
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise JudgeError(f"evals.autointerp: {where} refused the key in ${self.where.key_env} "
                                 f"({reason(exc)}); set a valid key (judge_api_key_env)") from None  # fmt: skip
            except openai.APIStatusError as exc:
                raise JudgeError(f"evals.autointerp: {where} rejected the request ({reason(exc)}); "
                                 f"check judge_model / ${MODEL_ENV}") from None  # fmt: skip
        choice = result.choices[0] if result.choices else None
        content = choice.message.content if choice is not None else None
        if content is None:
            raise JudgeError(f"evals.autointerp: {where} answered with no message content; check judge_model")
        usage = result.usage
        counts = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens} if usage else {}
        return content.strip(), counts

    def report(self) -> dict[str, Any]:
        """Requests, tokens and cost of this run (cache hits cost nothing), what the cache served, and the whole
        judging's tokens and list-price cost (the same on every re-run)."""
        u, p = self.usage, self.p
        price = (0.0, 0.0) if p.judge_backend == "local" else (p.judge_price_in_per_mtok, p.judge_price_out_per_mtok)

        def cost(prompt: int, completion: int) -> float:
            return round((prompt * price[0] + completion * price[1]) / 1e6, 6)

        total = u.requests + u.cache_hits
        return {
            "backend": p.judge_backend, "model": self.where.model, "base_url": self.where.base_url or "local (127.0.0.1)",
            "requests": u.requests, "cache_hits": u.cache_hits, "cache_hit_rate": u.cache_hits / total if total else 1.0,
            "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "cached_prompt_tokens": u.cached_prompt_tokens, "cached_completion_tokens": u.cached_completion_tokens,
            "cost_usd": cost(u.prompt_tokens, u.completion_tokens),
            "total_tokens": u.prompt_tokens + u.completion_tokens + u.cached_prompt_tokens + u.cached_completion_tokens,
            "total_cost_usd": cost(u.prompt_tokens + u.cached_prompt_tokens, u.completion_tokens + u.cached_completion_tokens),
            "server_start_seconds": self.server_start_seconds,
            "cache_folder": str(self.cache.folder),
        }  # fmt: skip


def ask_parsed(judge: Judge, messages: list[dict[str, str]], max_tokens: int, parse: Callable[[str], Any],
               answer_chars: str) -> tuple[Any, str, int]:  # fmt: skip
    """(parsed answer or None, last raw answer, attempts): the prompt again, sampled, up to ``format_retries``."""
    raw = ""
    for attempt in range(judge.p.format_retries + 1):
        raw = judge.ask(messages, max_tokens, attempt, answer_chars)
        parsed = parse(raw)
        if parsed is not None:
            return parsed, raw, attempt + 1
    return None, raw, judge.p.format_retries + 1
