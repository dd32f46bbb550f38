"""Tests for pipeline.models: the offline SmolLM2 HookedTransformer.

The model is loaded once per module (~15-20 s on 2 CPU cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from pipeline.models import load_model, model_d_model, model_n_layers, parse_dtype
from pipeline.models.smollm2 import gguf_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROMPT = "The quick brown fox jumps over the lazy dog. Sparse autoencoders"


@pytest.fixture(scope="module")
def smollm2():
    try:
        gguf_path()
    except RuntimeError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    model, tok = load_model("smollm2_gguf", "", "float32", "cpu")
    return model, tok


def test_shape_tables():
    assert model_n_layers("smollm2_gguf", "") == 30
    assert model_d_model("smollm2_gguf", "anything") == 576
    assert model_n_layers("hub", "google/gemma-2-2b") == 26
    assert model_d_model("hub", "google/gemma-2-9b") == 3584
    assert model_n_layers("hub", "gpt2") == 12
    assert model_n_layers("hub", "unknown/model") is None
    assert model_d_model("hub", "unknown/model") is None
    assert parse_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError):
        parse_dtype("float8")
    with pytest.raises(ValueError):
        model_n_layers("nope", "gpt2")


def test_config(smollm2):
    model, tok = smollm2
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp) == (30, 576, 9, 64, 1536)
    assert cfg.n_key_value_heads == 3
    assert cfg.d_vocab == 49152
    assert cfg.rotary_base == 100000.0
    assert cfg.default_prepend_bos is False
    assert model.tokenizer is tok
    # The tokenizer must not silently prepend a BOS (<|im_start|>).
    assert tok("Hello").input_ids == tok("Hello", add_special_tokens=False).input_ids


def test_logits_match_hf(smollm2):
    from transformers import AutoModelForCausalLM

    model, tok = smollm2
    path = gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )
    hf.eval()
    tokens = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        hf_logits = hf(tokens).logits
        tl_logits = model(tokens, return_type="logits")
    del hf
    assert tl_logits.shape == hf_logits.shape == (1, tokens.shape[1], 49152)
    max_diff = (tl_logits - hf_logits).abs().max().item()
    assert max_diff < 1e-3, max_diff


def test_greedy_answer_paris(smollm2):
    model, tok = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = tok(text, return_tensors="pt").input_ids
    new: list[int] = []
    with torch.no_grad():
        for _ in range(8):
            logits = model(tokens, return_type="logits")
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            tokens = torch.cat([tokens, torch.tensor([[nxt]])], dim=1)
            if "Paris" in tok.decode(new):
                break
    assert "Paris" in tok.decode(new), tok.decode(new)


def test_run_with_cache_stop_at_layer(smollm2):
    model, tok = smollm2
    hook = "blocks.11.hook_resid_post"
    batch = tok([PROMPT, PROMPT[::-1][: len(PROMPT)]], return_tensors="pt", padding=True).input_ids
    with torch.no_grad():
        out, cache = model.run_with_cache(batch, stop_at_layer=12, names_filter=hook)
        _, full_cache = model.run_with_cache(batch, names_filter=hook)
    acts = cache[hook]
    assert acts.shape == (batch.shape[0], batch.shape[1], 576)
    assert out.shape == acts.shape  # stop_at_layer returns the residual stream
    torch.testing.assert_close(acts, full_cache[hook], rtol=0, atol=0)


@pytest.mark.slow  # converts the GGUF from scratch
def test_converted_model_cache_matches_fresh_conversion(tmp_path, monkeypatch) -> None:
    """The safetensors cache must give exactly what converting the GGUF gives (weights, tokenizer)."""
    from pipeline.models import smollm2

    monkeypatch.setenv("SAEPIPE_CACHE", str(tmp_path))
    path = smollm2.gguf_path()
    tok_fresh, cfg_fresh, sd_fresh = smollm2._converted(path, 2048)
    assert len(list(tmp_path.glob("smollm2-tl-*/weights.safetensors"))) == 1
    tok_cached, cfg_cached, sd_cached = smollm2._converted(path, 2048)
    assert sd_fresh.keys() == sd_cached.keys()
    assert all(torch.equal(sd_fresh[k], sd_cached[k]) for k in sd_fresh)
    assert smollm2._rope_theta(cfg_cached) == smollm2._rope_theta(cfg_fresh) == 100000.0
    for text in ["Hello world", "<|im_start|>user\nHi<|im_end|>", "  spaces\tand\nnewlines é"]:
        assert tok_fresh(text)["input_ids"] == tok_cached(text)["input_ids"]
