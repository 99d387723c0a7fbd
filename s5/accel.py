"""How the training step runs on the hardware: precision (bf16/fp16 autocast, the fp16 gradient scaler)
and capture (CUDA graphs, torch.compile)."""

import contextlib
import functools
import warnings

import torch

from model import Net
from s5.config import PRECISIONS, one_of

# How train and test run the model: eagerly ("off"), its training step captured as CUDA graphs by
# torch.cuda.make_graphed_callables ("graphed"), or captured by torch.compile; "auto" is "graphed" for the
# Net on CUDA (faster end to end: docs/speed.md) and "off" elsewhere. See compile_model.
COMPILE_MODES = ("auto", "off", "graphed", "cudagraphs", "reduce-overhead")
MAX_GRAPHED_SHAPES = 8  # "graphed": captures kept per model; batches of further shapes run eagerly


def _cpu_has(feature):
    """Whether this CPU has an instruction set feature, by torch's own probe (False where torch has none)."""
    return getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)()


def autocast_dtype(device):
    """The autocast dtype precision="auto" picks: torch.bfloat16 where the device computes it natively
    (CUDA with bf16, CPUs with AVX512-BF16 or AMX); torch.float16 on CUDA GPUs without it, whose tensor
    cores do fp16 (trained with a gradient scaler, see grad_scaler); else None: fp32, since bf16 emulated in
    software is slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if _cpu_has("avx512_bf16") or _cpu_has("amx_tile") else None
    return None


def precision_note(precision, device):
    """A one-line note when `precision` makes `device` compute in a dtype it has no hardware for (slower
    than fp32, by far for fp16 on most CPUs), else None. train.py prints it before training."""
    device = torch.device(device)
    dtype = _precision_dtype(precision, device)
    if precision == "auto" or device.type not in ("cpu", "cuda"):
        return None
    if dtype == torch.bfloat16 and autocast_dtype(device) != torch.bfloat16:
        return (f"note: this {'GPU' if device.type == 'cuda' else 'CPU'} has no native bf16, so bf16 runs "
                "emulated in software, which is slow; --precision auto picks what is native")
    if dtype == torch.float16 and device.type == "cpu" and not _cpu_has("amx_fp16"):
        # No ratio: how much slower fp16 is depends on the CPU and the batch (29x on an AMD EPYC, ~250x on a
        # Xeon with AMX-BF16), and measuring it here would cost a user seconds of emulated fp16 at every start.
        return ("note: fp16 is slow on a CPU without AMX-FP16, as this one is: it runs emulated in software, many "
                "times slower than fp32; it is meant for GPUs without bf16 (T4, V100); --precision auto picks what is "
                "native")
    return None


def _precision_dtype(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be {one_of(PRECISIONS)}, got {precision!r}")
    return {"auto": autocast_dtype(device), "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def autocast(precision, device):
    """The autocast context for `precision` (one of PRECISIONS) on `device`; reusable across batches."""
    dtype = _precision_dtype(precision, device)
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(precision, device):
    """A torch.amp.GradScaler where `precision` trains in fp16 on `device` (small fp16 gradients would
    round to zero unscaled), else None. It skips the steps whose gradients overflow and adapts its scale;
    fit keeps one for the whole run and saves its state in the checkpoints."""
    if _precision_dtype(precision, device) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def resolve_compile_mode(model, device, mode):
    """The mode that `mode` (COMPILE_MODES) stands for with this model on this device ("auto" resolved);
    ValueError for an unknown mode, or for "graphed" off CUDA."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be {one_of(COMPILE_MODES)}, got {mode!r}")
    if mode == "graphed" and torch.device(device).type != "cuda":
        raise ValueError(f"compile mode 'graphed' replays CUDA graphs and needs a CUDA device, got {device}; "
                         "use compile mode 'off'")
    if mode != "auto":
        return mode
    # A replay skips the forward's Python: only the Net, whose forward does none per call, is captured
    # unasked, and not with hooks on it (collecting activations, say). Other models: "graphed" by name.
    hooked = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                 for m in model.modules())
    return "graphed" if torch.device(device).type == "cuda" and type(model) is Net and not hooked else "off"


@contextlib.contextmanager
def quiet_graph_warnings(mode):
    """make_graphed_callables makes the weights' gradient accumulators on its capture stream, and torch then
    warns that every backward joins two streams. The join is one event wait, far cheaper than what the replay
    saves (docs/speed.md), so the warning says nothing a user can act on. Filtered for a whole epoch in the
    "graphed" `mode` only: each scope resets Python's once-only warnings, so elsewhere nothing is touched."""
    if mode != "graphed":
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
        yield


def compile_model(model, device, mode="auto"):
    """`model` as train and test run it under `mode` (COMPILE_MODES): itself for "off", else a wrapper
    sharing its parameters (save and load `model`, not the wrapper).

    "auto" is "graphed" for the Net on CUDA, unless it has module hooks (a capture would run their Python
    only once, while capturing), and "off" for other models and elsewhere. Graphs replay the kernels
    recorded: a model whose forward does Python work per call (printing, collecting activations,
    branching on values) must stay "off"; another model can ask for "graphed" by name.

    "graphed" (CUDA only) captures the training forward and backward passes with
    torch.cuda.make_graphed_callables, once per batch shape on first use (a few warm-up steps, no compiler),
    and keeps the captures with the model, so later batches and epochs replay them; evaluation runs eagerly.

    "cudagraphs" and "reduce-overhead" capture with torch.compile instead, for comparison: "cudagraphs"
    traces forward and backward once per shape (train and eval) and replays the same kernels as CUDA graphs
    (the tracing takes seconds in a fresh process, so one S5 run is slower than eager: docs/speed.md);
    "reduce-overhead" replays inductor's fused kernels (tens of seconds to compile, cached on disk). Shapes
    are static (dynamic=False): an epoch's last, smaller batch is one more capture, made once; torch keeps
    the captures between calls, up to 8 (shapes x precisions x train/eval), then warns and runs eagerly
    (torch.compiler.reset() clears). Off CUDA "cudagraphs" runs the same traced graphs eagerly
    (aot_eager), so they are tested on any machine, and "reduce-overhead" is inductor's CPU code.
    """
    mode = resolve_compile_mode(model, device, mode)
    if mode == "off":
        return model
    if mode == "graphed":
        return functools.partial(_graphed_forward, model)
    if mode == "reduce-overhead":
        return functools.partial(_new_step, torch.compile(model, mode="reduce-overhead", dynamic=False))
    backend = "cudagraphs" if torch.device(device).type == "cuda" else "aot_eager"
    return functools.partial(_new_step, torch.compile(model, backend=backend, dynamic=False))


def _new_step(compiled, data):
    """compiled(data) as a new step: torch.compile's CUDA graphs may reuse the last step's output memory."""
    torch.compiler.cudagraph_mark_step_begin()
    return compiled(data)


class _Captures(dict):
    """A model's "graphed" captures, by batch shape and precision, and the weights' memory they were made
    for (`params`); never copied or saved with the model."""

    params = None

    def __deepcopy__(self, memo):
        return _Captures()

    def __reduce__(self):
        return _Captures, ()


class _Step(torch.nn.Module):
    """The model as make_graphed_callables takes it: it replaces the forward of the module it is given, so
    it gets this wrapper, one per capture, and the user's model stays as it was."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, data):
        return self.model(data)


def _graphed_forward(model, data):
    """model(data), in training replayed from a CUDA graph captured for this shape and precision."""
    if not model.training or not torch.is_grad_enabled():
        return model(data)
    captures = model.__dict__.setdefault("_graphed", _Captures())
    params = tuple((p.data_ptr(), p.requires_grad) for p in model.parameters())
    if captures.params != params:  # moved or replaced weights: the old graphs would read stale memory
        captures.clear()
        captures.params = params
    amp = torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda")
    key = (tuple(data.shape), data.dtype, data.stride(), amp)
    step = captures.get(key)
    if step is None:
        if len(captures) >= MAX_GRAPHED_SHAPES:
            return model(data)
        # make_graphed_callables needs autocast's weight cache off: cached casts would be left out of the graph.
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=bool(amp), cache_enabled=False):
            step = torch.cuda.make_graphed_callables(_Step(model), (data.clone(memory_format=torch.preserve_format),))
        captures[key] = step
    return step(data)


def to_channels_last(model, channels_last):
    """The model's weights in channels-last memory when `channels_last` (the fast step's layout); returns it."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def scaled_step(scaler, loss, optimizer):
    """backward and step in fp16: the loss scaled up so small gradients do not round to zero, the step skipped
    when the gradients overflowed, then the scale adapted."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
