"""Server flags for MTP decoding and their translation into SGLang's own settings.

SGLang has no official way to add server arguments. The plugin adds its flags with an AFTER
hook on ``ServerArgs.add_cli_args`` and translates them in an AFTER hook on
``ServerArgs.from_cli_args``: ``--decode-mode mtp`` becomes
``speculative_algorithm="MTP"`` and the MTP settings travel to every SGLang process in the
``SGLANG_MTP_CONFIG`` environment variable (JSON; child processes inherit it).
``--mtp-k-max 1`` is plain decoding: SGLang then runs without the MTP algorithm at all (its
own decode path and CUDA graphs, so it costs exactly what plain SGLang costs; the ``<MTP>``
id is then not suppressed, as for any plain SGLang server).

``sglang.Engine(**kwargs)`` rejects unknown keyword arguments, so Python users go through
:func:`engine` (or set ``speculative_algorithm="MTP"`` and ``SGLANG_MTP_CONFIG`` themselves).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Optional, Union

from sglang_mtp.strategy import MAX_K, Strategy
from sglang_mtp.width import WidthPolicy

logger = logging.getLogger(__name__)

ALGORITHM = "MTP"
ENV_CONFIG = "SGLANG_MTP_CONFIG"
STRATEGIES = ("conf_adapt", "static", "verify")
DEBUG_ENV = "SGLANG_MTP_DEBUG"
CPU_OVERLAP_ENV = "SGLANG_MTP_CPU_OVERLAP"  # "1": keep overlap scheduling on a CPU (see cpu_overlap_off)
# --mtp-token-budget default per device kind: query tokens per decode forward before blocks
# shrink (sglang_mtp.width). CPU: measured on the toy (bench/results/serve-cpu-toy-width);
# GPU: not measured yet (no GPU was available); an 8B model's decode forward on an H100
# stays memory-bound up to a few hundred query tokens.
DEFAULT_TOKEN_BUDGET = {"cpu": 512, "cuda": 512}


class MTPStartupError(ValueError):
    """A configuration problem found before the server is ready.

    ``launch_server`` prints it as one line (see :func:`install_excepthook`); the traceback
    only with ``SGLANG_MTP_DEBUG=1``.
    """


def install_excepthook() -> None:
    """Print an uncaught :class:`MTPStartupError` as one line instead of a traceback."""
    previous = sys.excepthook
    if getattr(previous, "_sglang_mtp", False):
        return

    def hook(kind, value, tb):
        if isinstance(value, MTPStartupError) and os.environ.get(DEBUG_ENV, "0") in ("", "0"):
            print(f"error: sglang-mtp: {value} (traceback: {DEBUG_ENV}=1)", file=sys.stderr)
            return
        previous(kind, value, tb)

    hook._sglang_mtp = True
    sys.excepthook = hook


@dataclass(frozen=True)
class MTPConfig:
    """Server-wide MTP settings (per-request ``custom_params`` may override them)."""

    strategy: str = "conf_adapt"
    threshold: float = 0.9
    k_max: int = 8
    mask_token_id: Optional[int] = None
    token_budget: Union[int, str] = "default"  # int >= 0 (0 = fixed width), "auto" or "default"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise MTPStartupError(f"--mtp-strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if isinstance(self.k_max, bool) or not isinstance(self.k_max, int) or not 1 <= self.k_max <= MAX_K:
            raise MTPStartupError(f"--mtp-k-max must be an integer in [1, {MAX_K}], got {self.k_max!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise MTPStartupError(f"--mtp-threshold must be a number in [0, 1], got {t!r}")
        m = self.mask_token_id
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise MTPStartupError(f"--mtp-mask-token-id must be a non-negative integer, got {m!r}")
        b = self.token_budget
        if b not in ("auto", "default") and (isinstance(b, bool) or not isinstance(b, int) or b < 0):
            raise MTPStartupError(f"--mtp-token-budget must be a non-negative integer (0 = fixed width), "
                                  f"'auto' or 'default', got {b!r}")

    @property
    def width(self) -> int:
        """Query width of every decode forward: a_prev accepted tokens + masks."""
        return 2 * self.k_max - 1

    def strategy_obj(self) -> Strategy:
        """The server default as a :class:`Strategy` (k_max 1 is plain decoding)."""
        if self.k_max == 1:
            return Strategy.ntp()
        if self.strategy == "static":
            return Strategy.static(self.k_max)
        if self.strategy == "verify":
            return Strategy.verify(self.k_max)
        return Strategy.conf_adapt(float(self.threshold), self.k_max)

    def width_policy(self, device: str = "cpu") -> WidthPolicy:
        """The load-adaptive width policy (:mod:`sglang_mtp.width`) on ``device``; for
        ``auto``, the fixed width until the worker has calibrated (:mod:`.calibrate`)."""
        b = self.token_budget
        if b == "auto":
            return WidthPolicy(self.k_max)
        if b == "default":
            b = DEFAULT_TOKEN_BUDGET.get(str(device).split(":")[0], DEFAULT_TOKEN_BUDGET["cuda"])
        return WidthPolicy(self.k_max, budget=b)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_env() -> "MTPConfig":
        """The settings published by the launcher, or the defaults."""
        raw = os.environ.get(ENV_CONFIG)
        if not raw:
            return MTPConfig()
        try:
            return MTPConfig(**json.loads(raw))
        except (TypeError, json.JSONDecodeError) as e:
            raise MTPStartupError(f"bad {ENV_CONFIG}={raw!r}: {e}") from None


def add_cli_args(result, parser: argparse.ArgumentParser):
    """AFTER hook on ``ServerArgs.add_cli_args``: the MTP flags (shown by ``--help``)."""
    if any("--decode-mode" in a.option_strings for a in parser._actions):
        return result  # idempotent when several plugin copies load
    d = MTPConfig()
    group = parser.add_argument_group("MTP decoding (sglang-mtp plugin)")
    group.add_argument("--decode-mode", choices=("ntp", "mtp"), default="ntp",
                       help="ntp: SGLang's own decoding (unchanged). mtp: multi-token prediction "
                            "with the checkpoint's <MTP> mask token (on a CPU it turns overlap "
                            f"scheduling off; {CPU_OVERLAP_ENV}=1 keeps it). Default: ntp.")
    group.add_argument("--mtp-strategy", choices=STRATEGIES, default=d.strategy,
                       help="conf_adapt: accept the longest run of predictions with top-1 "
                            "probability >= --mtp-threshold; static: accept all k_max; verify: "
                            "lossless (output equals greedy decoding). Default: %(default)s.")
    group.add_argument("--mtp-threshold", type=float, default=d.threshold,
                       help="ConfAdapt threshold tau in [0, 1]. Default: %(default)s.")
    group.add_argument("--mtp-k-max", type=int, default=d.k_max,
                       help="Largest block (tokens per forward pass); the decode forward is "
                            "2*k_max-1 tokens wide per request. 1 = plain decoding. "
                            "Default: %(default)s.")
    group.add_argument("--mtp-token-budget", type=_token_budget, default=d.token_budget,
                       help="Load-adaptive width: query tokens per decode forward. Each step's "
                            "width is the widest of 1, 3, 7, ... 2*k_max-1 with batch*width <= N, "
                            "and every block is capped at (width+1)/2 (lossy output may then depend "
                            "on the load; verify output never does). 0 = fixed width 2*k_max-1 "
                            "(deterministic); auto = measure forward times at the first decode "
                            "step and pick the width with the most tokens per second; "
                            f"default = {DEFAULT_TOKEN_BUDGET['cpu']} on CPU, "
                            f"{DEFAULT_TOKEN_BUDGET['cuda']} on GPU.")
    group.add_argument("--mtp-mask-token-id", type=int, default=None,
                       help="Id of the <MTP> mask token. Default: the checkpoint's "
                            "config.mtp_mask_token_id (or the tokenizer's <MTP> token).")
    return result


def from_cli_args(result, cls, args: argparse.Namespace):
    """AFTER hook on ``ServerArgs.from_cli_args``: translate ``--decode-mode mtp``."""
    if getattr(args, "decode_mode", "ntp") != "mtp":
        return result
    cfg = MTPConfig(strategy=args.mtp_strategy, threshold=args.mtp_threshold,
                    k_max=args.mtp_k_max, mask_token_id=args.mtp_mask_token_id,
                    token_budget=getattr(args, "mtp_token_budget", "default"))
    if result.speculative_algorithm not in (None, ALGORITHM):
        raise MTPStartupError(f"--decode-mode mtp cannot be combined with "
                         f"--speculative-algorithm {result.speculative_algorithm}")
    os.environ[ENV_CONFIG] = cfg.to_env()
    if cfg.k_max > 1:  # k_max 1 is plain decoding: SGLang's own path, unchanged (see plain.py)
        result.speculative_algorithm = ALGORITHM
        backend = narrow_attention_backend(result)
        if backend:
            result.attention_backend = backend
    return result


BACKEND_FIELDS = ("attention_backend", "decode_attention_backend", "prefill_attention_backend")


def narrow_attention_backend(server_args) -> Optional[str]:
    """The attention backend an MTP server takes when none is given: "flashinfer" on a CUDA
    device, for a model without MLA, where FlashInfer is installed; else None (SGLang's own
    default). Load-adaptive width (``--mtp-token-budget``) needs a backend that sizes a verify
    batch from the batch (worker.NARROW_BACKENDS). SGLang's default on Hopper for such models
    is FA3 (and TRT-LLM MHA on Blackwell), which size it from the server's width, so every step
    would run 2*k_max-1 wide at any load: the slowdown at concurrency this plugin exists to
    avoid. A backend given on the command line is always kept (it then runs as it can)."""
    if any(getattr(server_args, name, None) for name in BACKEND_FIELDS):
        return None
    device = getattr(server_args, "device", None)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not str(device).startswith("cuda") or importlib.util.find_spec("flashinfer") is None:
        return None
    try:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(server_args.model_path,
                                        trust_remote_code=trusts_remote_code(server_args))
    except Exception:  # SGLang reports an unreadable checkpoint itself
        return None
    if getattr(hf.get_text_config(), "kv_lora_rank", None):  # MLA: FlashInfer's MLA backend is no narrower
        return None
    logger.info("MTP: attention backend flashinfer (decode steps narrow with the load; pass --attention-backend "
                "to choose another, which may run every step at the full width)")
    return "flashinfer"


def cpu_overlap_off(device, overlap_disabled: bool) -> bool:
    """Whether an MTP server turns SGLang's overlap scheduling off: on a CPU, unless it is off
    already or ``SGLANG_MTP_CPU_OVERLAP=1``.

    Overlap scheduling runs batch N+1 before processing batch N's result, which pays on a GPU
    (the forward is asynchronous). A CPU forward is synchronous, so there every step's tokens
    reach the client one forward later, and a request that stopped at an end token in batch N
    decodes once more in batch N+1. MTP requests take few steps, so that costs them more than
    plain ones. SGLang turns it off for its own speculative algorithms on a CPU in the same way.
    The variable keeps it on (the Engine tests use it to run the GPU's default path on a CPU)."""
    if overlap_disabled or str(device).split(":")[0] != "cpu":
        return False
    return os.environ.get(CPU_OVERLAP_ENV, "0") in ("", "0")


def _token_budget(text: str):
    """argparse type of --mtp-token-budget: an integer >= 0, 'auto' or 'default'."""
    if text in ("auto", "default"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, 'auto' or 'default', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = fixed width), got {value}")
    return value


def engine(model_path: str, *, strategy: str = "conf_adapt", threshold: float = 0.9, k_max: int = 8,
           mask_token_id: Optional[int] = None, token_budget: Union[int, str] = "default", **engine_kwargs):
    """An ``sglang.Engine`` decoding with MTP (the Python twin of ``--decode-mode mtp``).

    ``engine_kwargs`` go to ``sglang.Engine`` unchanged (device, dtype, attention backend...),
    except that on a CUDA device with no attention backend given FlashInfer is asked for, as
    ``--decode-mode mtp`` does (:func:`narrow_attention_backend`).
    """
    import sglang

    cfg = MTPConfig(strategy=strategy, threshold=threshold, k_max=k_max, mask_token_id=mask_token_id,
                    token_budget=token_budget)
    os.environ[ENV_CONFIG] = cfg.to_env()
    if cfg.k_max == 1:  # plain decoding: SGLang unchanged, nothing of the worker on the path
        return sglang.Engine(model_path=model_path, **engine_kwargs)
    import types

    backend = narrow_attention_backend(types.SimpleNamespace(model_path=model_path, **{
        n: engine_kwargs.get(n) for n in ("device", "trust_remote_code") + BACKEND_FIELDS}))
    if backend:
        engine_kwargs["attention_backend"] = backend
    return sglang.Engine(model_path=model_path, speculative_algorithm=ALGORITHM, **engine_kwargs)


MASK_TOKEN = "<MTP>"


def trusts_remote_code(server_args) -> bool:
    """Whether the checkpoint's own code may run (``--trust-remote-code``, off by default)."""
    return bool(getattr(server_args, "trust_remote_code", False))


def resolve_mask_token_id(hf_config, tokenizer_path: Optional[str], explicit: Optional[int],
                          trust_remote_code: bool = False) -> int:
    """The ``<MTP>`` id: ``explicit``, else ``config.mtp_mask_token_id``, else the tokenizer's
    (its code runs only with ``trust_remote_code``, as in SGLang: ``--trust-remote-code``).

    Raises a ValueError naming the checkpoint and the flag when there is none.
    """
    if explicit is not None:
        return int(explicit)
    found = getattr(hf_config, "mtp_mask_token_id", None)
    if found is not None:
        return int(found)
    if tokenizer_path:
        try:
            from transformers import AutoTokenizer

            vocab = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=trust_remote_code).get_vocab()
            if MASK_TOKEN in vocab:
                return int(vocab[MASK_TOKEN])
        except (OSError, ValueError):
            pass
    name = getattr(hf_config, "_name_or_path", None) or tokenizer_path
    raise MTPStartupError(
        f"--decode-mode mtp: checkpoint {name!r} has no {MASK_TOKEN} mask token "
        "(no config.mtp_mask_token_id and no <MTP> in its tokenizer). Convert it with "
        "`sglang-mtp convert SRC DST` (sglang_mtp.convert) or pass --mtp-mask-token-id."
    )


def check_mask_in_vocab(mask_id: int, vocab_size: int) -> None:
    """The mask id must index the model's embedding and un-embedding rows."""
    if not 0 <= mask_id < vocab_size:
        raise MTPStartupError(
            f"--mtp-mask-token-id {mask_id} is outside the model's vocabulary (vocab_size "
            f"{vocab_size}): pass the id of the checkpoint's {MASK_TOKEN} token, or leave the flag unset"
        )


def check_cuda_kernels(device: str) -> None:
    """On a CUDA device the fused ops must have their CUDA kernels (fail before serving)."""
    from sglang_mtp import ops

    if str(device).startswith("cuda") and not ops.has_cuda_kernels():
        raise MTPStartupError(
            "sglang-mtp was built without its CUDA kernels, so --decode-mode mtp cannot run on "
            f"device {device!r}. Rebuild with a CUDA toolkit: SGLANG_MTP_CUDA=1 pip install "
            "--no-build-isolation -e .  (the build log says why the CUDA half was skipped)"
        )


def check_no_hidden_states(server_args) -> None:
    """Refuse hidden-state returns at start-up. SGLang reads a request's hidden states at fixed
    offsets: its prompt's rows in the prefill and, per decode step, one row per emitted token
    at a stride of W + 1. An MTP forward has the masks among its prefill rows and W rows per
    request in decode, a step's tokens predicted at rows that depend on the request's state,
    so every request after the first in a batch would get other rows' states."""
    mode = getattr(server_args, "return_hidden_states_mode", None)
    if getattr(server_args, "enable_return_hidden_states", False):
        flag = "--enable-return-hidden-states"
    elif mode not in (None, "none"):
        flag = f"--return-hidden-states-mode {mode}"
    else:
        return
    raise MTPStartupError(f"--decode-mode mtp cannot return hidden states ({flag}): a batch's requests would get "
                          "each other's rows. Serve hidden states from a server without --decode-mode mtp")


def check_supported_setup(server_args) -> None:
    """Refuse at start-up the parallel and disaggregated set-ups an MTP step would hang in or
    serve wrongly, each with the flag that asked for it:
    - data-parallel attention: the ranks of a tensor-parallel group then hold different
      batches, while rank 0's accept decisions are broadcast over the whole group
      (rank_sync.py) and the masks in a prefill are tokens SGLang's cross-rank token counts
      do not include;
    - pipeline parallelism: a step's accept decision needs the logits of the last stage on
      every stage;
    - ``--enable-layernorm-sp``: a prefill's hidden states are split by sequence where the
      logits processor reads the masks' rows;
    - prefill/decode disaggregation: the decode server never sees the prefill that starts a
      request's MTP state."""
    reasons = []
    attn_dp = getattr(server_args, "attn_dp_size", None)
    if getattr(server_args, "enable_dp_attention", False) or (isinstance(attn_dp, int) and attn_dp > 1):
        reasons.append("data-parallel attention (--enable-dp-attention / --attn-dp-size): the ranks hold different "
                       "batches, and rank 0's accept decisions are broadcast to every rank")
    pp = getattr(server_args, "pp_size", 1)
    if isinstance(pp, int) and pp > 1:
        reasons.append(f"pipeline parallelism (--pp-size {pp}): each step's accept decision needs the last stage's "
                       "logits on every stage")
    if getattr(server_args, "enable_layernorm_sp", False):
        reasons.append("--enable-layernorm-sp: a prefill's hidden states are split by sequence where the masks' "
                       "rows are read")
    mode = getattr(server_args, "disaggregation_mode", None)
    if mode not in (None, "null"):
        reasons.append(f"--disaggregation-mode {mode}: a decode server never sees the prefill that starts a "
                       "request's MTP state")
    if reasons:
        raise MTPStartupError("--decode-mode mtp does not support " + "; nor ".join(reasons)
                              + ". Serve this set-up without --decode-mode mtp")


def check_attention_only(model_config) -> None:
    """Refuse models with recurrent (Mamba, linear-attention) layers: the masks of a prefill
    and of every decode step would advance their recurrent state, which, unlike mask KV, is
    not overwritten by the next step's real tokens."""
    try:
        from sglang.srt.configs.hybrid_arch import mambaish_config

        recurrent = mambaish_config(model_config) is not None
    except (ImportError, AttributeError):
        return  # an SGLang without these configs has no such models either
    if recurrent:
        name = type(getattr(model_config, "hf_config", None)).__name__
        raise MTPStartupError(f"--decode-mode mtp cannot serve a model with recurrent layers ({name}): the "
                              "<MTP> masks would advance its recurrent state. Serve it without --decode-mode mtp")
