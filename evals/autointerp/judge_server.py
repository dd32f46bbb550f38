"""The offline judge: a real OpenAI-compatible HTTP server on 127.0.0.1 serving the shipped SmolLM2-135M-Instruct.

Why our own server over transformers (README.md has the measurements): llama-cpp-python has no binary
wheel on PyPI for this platform (a source build on 2 cores takes many minutes) and vllm's CPU build is
gigabytes; transformers and the GGUF are already installed. The eval talks to it through the same
``openai`` client as to any remote endpoint, so the offline path exercises the real protocol.

Run as ``python -m evals.autointerp.judge_server --port 0 --parent PID``: it prints ``READY <port>`` once
the model is loaded, serves ``POST /v1/chat/completions`` (with OpenAI's ``logit_bias``) and ``GET /v1/models`` (one request at a time:
one model, few cores), counts requests at ``GET /saepipe/stats``, and exits when its parent dies (a
``kill -9`` of the stage leaves no server behind). With ``$SAEPIPE_JUDGE_SERVER_KEY`` set it answers only
requests carrying that key (``Authorization: Bearer``), and like OpenAI it refuses a model it does not serve,
so it can stand in for an external endpoint (401 / 404 with OpenAI's error bodies).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

MODEL_NAME = "SmolLM2-135M-Instruct"
HOST = "127.0.0.1"
KEY_ENV = "SAEPIPE_JUDGE_SERVER_KEY"
"""The key the server requires, from its environment (never its command line, which ``ps`` shows)."""


def hf_folder() -> Path:
    """The shipped GGUF as a transformers folder, converted once (de-quantising takes ~20 s, loading the
    folder ~1 s); named by the GGUF's digest and renamed into place whole, like smollm2's own cache."""
    from safetensors.torch import save_model

    from pipeline.models import smollm2

    gguf = smollm2.gguf_path()
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    folder = smollm2.cache_root() / f"smollm2-hf-{digest}"
    if not (folder / "config.json").exists():
        tok, model = smollm2._load_hf(gguf.parent, gguf.name)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tok.save_pretrained(tmp)
        model.config.save_pretrained(tmp)  # a GGUF-loaded model refuses save_pretrained; its weights do not
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding
        tmp.rename(folder)
    return folder


class Generator:
    """Chat completions from one causal LM; ``lock`` keeps requests one at a time."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
        self.lock = threading.Lock()
        self.requests = 0
        self.completion_tokens = 0
        self.generate_seconds = 0.0
        self.prompt_digests: list[str] = []

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        torch = self.torch
        messages = body["messages"]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]  # fmt: skip
        temperature = float(body.get("temperature") or 0.0)
        kwargs: dict[str, Any] = {"max_new_tokens": int(body.get("max_tokens") or 64), "do_sample": temperature > 0}
        if temperature > 0:
            kwargs |= {"temperature": temperature, "top_p": float(body.get("top_p") or 1.0)}
        if body.get("logit_bias"):  # OpenAI's parameter: token id -> bias added to its logit
            bias = torch.zeros(self.model.config.vocab_size)
            for token, value in body["logit_bias"].items():
                bias[int(token)] = float(value)
            kwargs["logits_processor"] = [lambda _ids, scores: scores + bias]
        with self.lock:
            started = time.perf_counter()
            torch.manual_seed(int(body.get("seed") or 0))
            with torch.no_grad():
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=self.tokenizer.eos_token_id,
                                          **kwargs)  # fmt: skip
            new = out[0, ids.shape[1]:]
            self.requests += 1
            self.completion_tokens += len(new)
            self.generate_seconds += time.perf_counter() - started
            self.prompt_digests.append(hashlib.sha256(json.dumps(messages).encode()).hexdigest())
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= kwargs["max_new_tokens"] else "stop"
        return {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or MODEL_NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                      "total_tokens": ids.shape[1] + len(new)},
        }  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "completion_tokens": self.completion_tokens,
                "generate_seconds": round(self.generate_seconds, 3), "prompt_digests": self.prompt_digests}  # fmt: skip


@functools.lru_cache(maxsize=8)
def answer_bias(chars: str) -> dict[str, int]:
    """OpenAI ``logit_bias`` keeping SmolLM2 to tokens made only of ``chars`` (and end of turn): a 135M judge
    asked for '1, 4' or '[1, 0]' otherwise rambles in prose almost every time (README.md)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_folder(), local_files_only=True)
    ok = {i for i in range(len(tok)) if (text := tok.decode([i])) and set(text) <= set(chars)}
    ok.add(tok.convert_tokens_to_ids("<|im_end|>"))
    return {str(i): 100 for i in sorted(ok)}


def handler_for(gen: Generator, key: str | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # requests are counted, not logged to stderr
            pass

        def send_json(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self.send_json(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "saepipe"}]})
            elif self.path == "/saepipe/stats":
                self.send_json(200, gen.stats())
            else:
                self.send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                return
            body_bytes = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
                self.send_json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})  # fmt: skip
                return
            try:
                body = json.loads(body_bytes)
                if body.get("model", MODEL_NAME) != MODEL_NAME:
                    self.send_json(404, {"error": {"message": f"The model `{body['model']}` does not exist (this server "
                                                   f"serves {MODEL_NAME})", "type": "invalid_request_error",
                                                   "code": "model_not_found"}})  # fmt: skip
                    return
                payload = gen.complete(body)
            except (ValueError, KeyError, TypeError) as exc:
                self.send_json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
                return
            self.send_json(200, payload)

    return Handler


def watch_parent(parent: int) -> None:
    """Exit at once when the process that started us is gone (its kill -9 must not orphan a server, nor may a
    generation in progress hold it up); re-parenting shows as a new parent id."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--port", type=int, default=0, help="0: any free port (printed on the READY line)")
    args.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    args.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    opts = args.parse_args(argv)
    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)
    gen = Generator(hf_folder())
    server = ThreadingHTTPServer((HOST, opts.port), handler_for(gen, os.environ.get(KEY_ENV) or None))
    if opts.parent:
        threading.Thread(target=watch_parent, args=(opts.parent,), daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


class LocalJudgeServer:
    """Starts the server as a child process on a free loopback port and stops it; a context manager.
    ``api_key``: requests must carry it (the stage's own server needs none: it listens on loopback only)."""

    def __init__(self, start_timeout: float = 180.0, threads: int | None = None, api_key: str | None = None):
        self.start_timeout, self.threads, self.api_key = start_timeout, threads, api_key
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.start_seconds = 0.0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def __enter__(self) -> Self:
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "evals.autointerp.judge_server", "--port", "0", "--parent", str(os.getpid())]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", KEY_ENV: self.api_key or ""}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on stderr
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self._ready_line()
        self.port = int(line.split()[1])
        self.start_seconds = time.perf_counter() - started
        return self

    def _ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.start_timeout)
        if not found or not found[0].startswith("READY"):
            self.proc.kill()
            self.log.seek(0)
            err = self.log.read().strip().splitlines()
            tail = err[-1] if err else "no output"
            raise RuntimeError(f"autointerp: the offline judge server did not start within {self.start_timeout:.0f}s ({tail})")
        return found[0]

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


if __name__ == "__main__":
    main()
