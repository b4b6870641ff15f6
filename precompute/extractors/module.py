"""Generic hook machinery: activations of one submodule of any `torch.nn.Module`.

Every model family reduces to "run the model, grab one module's output, keep some tokens".
`LayerCapture` does the grabbing (a forward hook that can also stop the forward early, so the
layers after the hooked one cost nothing); `select_tokens` does the keeping; `ModuleExtractor`
wraps both behind the `Extractor` interface for use from the Python API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from precompute.extractors.base import Extractor, ExtractorError, ExtractorInfo

TOKEN_SELECTIONS = ("cls", "patches", "all", "pooled")
"""`cls`: token 0; `patches`: tokens 1: (all tokens without a CLS); `all`; `pooled`: mean."""

OutputIndex = int | str | Callable[[Any], torch.Tensor] | None
"""Which tensor of a module's output to keep: position, key, picker function, or the first."""


class _StopForward(Exception):
    """Raised from a hook once the activation is captured, so later layers are never run."""


def check_token_selection(token_selection: str, valid: Sequence[str] = TOKEN_SELECTIONS) -> None:
    """Refuse a selection outside `valid` with a message listing the valid ones."""
    if token_selection not in valid:
        raise ExtractorError(f"token selection {token_selection!r} is not supported here; choose one of {list(valid)}")


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """View an activation as [batch, tokens, d]: 2-D [b, d] is one token, 4-D [b, c, h, w] is
    h*w tokens in row-major grid order (the store's patch order)."""
    if x.ndim == 3:
        return x
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2)
    raise ExtractorError(f"cannot read a {x.ndim}-D activation {tuple(x.shape)} as tokens")


def select_tokens(x: torch.Tensor, token_selection: str, *, has_cls: bool = True) -> torch.Tensor:
    """Keep the tokens asked for from [batch, tokens, d]; returns [batch, tokens', d].

    `has_cls` says whether token 0 is a CLS token: without one, `patches` is every token and
    `cls` is refused rather than silently returning a patch.
    """
    check_token_selection(token_selection)
    if token_selection == "all":
        return x
    if token_selection == "pooled":
        return x.mean(dim=1, keepdim=True)
    if not has_cls:
        if token_selection == "cls":
            raise ExtractorError("token selection 'cls' needs a model with a CLS token; choose 'patches', 'all' or 'pooled'")
        return x
    if token_selection == "cls":
        return x[:, :1]
    return x[:, 1:]


def pick_output(output: Any, index: OutputIndex = None) -> torch.Tensor:
    """The tensor inside a module's output.

    Modules return a tensor, a tuple (HF layers in older versions, diffusers FLUX blocks'
    `(encoder_hidden_states, hidden_states)`) or a dict-like `ModelOutput`. `index` picks the
    element (position or key); None means the tensor itself or the first element; a callable
    picks it itself (e.g. FLUX streams, whose layout differs between diffusers versions).
    """
    if callable(index):
        return index(output)
    if isinstance(output, torch.Tensor):
        if index not in (None, 0):
            raise ExtractorError(f"module returned one tensor; output index {index!r} does not exist")
        return output
    if isinstance(output, Mapping):
        keys = list(output.keys())
        key = keys[0] if index is None else keys[index] if isinstance(index, int) else index
        if key not in output:
            raise ExtractorError(f"module output has no {key!r}; it has {keys}")
        return pick_output(output[key])
    if isinstance(output, (tuple, list)):
        i = 0 if index is None else index
        if not isinstance(i, int) or not -len(output) <= i < len(output):
            raise ExtractorError(f"module returned a {len(output)}-tuple; output index {index!r} is not in it")
        return pick_output(output[i])
    raise ExtractorError(f"module output of type {type(output).__name__} holds no tensor")


def get_module(model: nn.Module, module_path: str) -> nn.Module:
    """`model.get_submodule` with an error that names nearby valid paths."""
    try:
        return model.get_submodule(module_path)
    except AttributeError as err:
        parent = module_path.rpartition(".")[0]
        names = [n for n, _ in model.named_modules() if n and n.startswith(parent)][:12]
        raise ExtractorError(f"no module {module_path!r} in {type(model).__name__}; e.g. {names}") from err


class LayerCapture:
    """A forward hook on one module that records its (picked) output.

    `stop=True` raises `_StopForward` from the hook so the rest of the forward is skipped;
    `run` catches it. `first_call_only=True` keeps the first call's output when the module runs
    several times per `run` (diffusion steps), which is the FLUX recipe's "first denoising step".
    `transform` maps the picked tensor (e.g. stream splitting) before it is stored.
    `pre=True` captures the module's input instead (hidden_states[0] is the input of block 0).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        output_index: OutputIndex = None,
        stop: bool = True,
        first_call_only: bool = True,
        pre: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.module = module
        self.output_index = output_index
        self.stop = stop
        self.first_call_only = first_call_only
        self.pre = pre
        self.transform = transform
        self.captured: torch.Tensor | None = None
        self.n_calls = 0

    def _record(self, value: Any) -> None:
        self.n_calls += 1
        if self.captured is None or not self.first_call_only:
            x = pick_output(value, self.output_index)
            self.captured = self.transform(x) if self.transform is not None else x
        if self.stop:
            raise _StopForward

    def _hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._record(output)

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._record(args if args else kwargs)

    def run(self, forward: Callable[[], Any]) -> tuple[torch.Tensor, Any]:
        """Call `forward()` with the hook on; return (captured tensor, forward's result or None
        when it was stopped)."""
        self.captured, self.n_calls = None, 0
        if self.pre:
            handle = self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        else:
            handle = self.module.register_forward_hook(self._hook)
        result = None
        try:
            result = forward()
        except _StopForward:
            pass
        finally:
            handle.remove()
        if self.captured is None:
            raise ExtractorError(
                f"the hooked module {type(self.module).__name__} never ran during the forward; is it on the model's forward path?"
            )
        return self.captured, result


def move_batch(batch: Any, device: torch.device | str, dtype: torch.dtype | None = None) -> Any:
    """Move tensors (in dicts, lists, tuples) to `device`; floating tensors also to `dtype`."""
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device, dtype) for v in batch)
    return batch


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Call the model on a batch: keyword arguments for a dict, positional for a tuple."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


class ModuleExtractor(Extractor):
    """Activations of `model.get_submodule(module_path)` for any `torch.nn.Module`.

    `prepare_fn(inputs) -> batch` runs on CPU in loader workers (keep it picklable: a module
    level function or an object, not a lambda, when workers are spawned). `forward_fn(model,
    batch)` defaults to `model(**batch)` / `model(batch)`. The forward stops right after the
    hooked module. Activations are checked against `info` (tokens_per_sample, d_in) so a wrong
    image size or layer fails loudly instead of writing a malformed store.
    """

    def __init__(
        self,
        model: nn.Module,
        module_path: str,
        token_selection: str,
        prepare_fn: Callable[[list], Any],
        info: ExtractorInfo,
        *,
        output_index: OutputIndex = None,
        has_cls: bool = True,
        capture_input: bool = False,
        forward_fn: Callable[[nn.Module, Any], Any] = default_forward,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_token_selection(token_selection)
        self.model = model
        self.module_path = module_path
        self.token_selection = token_selection
        self.prepare_fn = prepare_fn
        self.info = info
        self.has_cls = has_cls
        self.forward_fn = forward_fn
        self.device = device if device is not None else _model_device(model)
        self.dtype = dtype
        self.capture = LayerCapture(
            get_module(model, module_path),
            output_index=output_index,
            stop=True,
            pre=capture_input,
        )

    def prepare(self, inputs: list) -> Any:
        return self.prepare_fn(inputs)

    @torch.inference_mode()
    def activations(self, batch: Any) -> torch.Tensor:
        batch = move_batch(batch, self.device, self.dtype)
        raw, _ = self.capture.run(lambda: self.forward_fn(self.model, batch))
        return self.finish(raw)

    def finish(self, raw: torch.Tensor) -> torch.Tensor:
        """The hooked module's output -> the stored tokens (shared with one-pass multi-layer runs)."""
        acts = select_tokens(as_tokens(raw), self.token_selection, has_cls=self.has_cls)
        check_shape(acts, self.info)
        return acts.float()


def check_shape(acts: torch.Tensor, info: ExtractorInfo) -> None:
    """Refuse activations whose tokens or width disagree with what the manifest will say."""
    if acts.shape[1:] != (info.tokens_per_sample, info.d_in):
        raise ExtractorError(
            f"layer {info.layer!r} with selection {info.token_selection!r} gave activations "
            f"{tuple(acts.shape)}, expected [batch, {info.tokens_per_sample}, {info.d_in}] "
            "(check the image size / sequence length)"
        )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
