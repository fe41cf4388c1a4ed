"""Row-sparse AdamW for token tables: torch's AdamW, exactly, at the cost of the rows that have moments.

A text tower's token table (XLM-R: 250,002 rows) gets a gradient on the few hundred rows of a batch's tokens, yet
torch's AdamW updates every entry every step. For a row whose moments and gradient are all zero, AdamW's step is
exactly the weight decay, p *= 1 - lr * wd: its moments stay zero and its Adam term is 0 / (0 + eps) = 0. Every
other row needs the full update, also when its gradient is zero (its moments decay). So `RowSparseAdamW` keeps, per
table, the rows that ever had a non-zero gradient, found in the gradient itself (so accumulation, several ranks,
clipping and the divergence guard's zeroed gradients need nothing special), scales the whole table by the decay in
one multiply, and applies AdamW's operations, in torch's order, to those rows alone. Every other parameter takes
torch's AdamW step. The state is AdamW's (step, dense exp_avg and exp_avg_sq), so state dicts, checkpoints and
open_clip_train resumes are unchanged; after a load the rows are found again from the moments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

# a token table qualifies when it has at least this many times more rows than the tokens of one optimizer step
ROWS_PER_STEP_TOKEN = 4
# above this fraction of a table's rows in use, the rows are updated as one dense tensor (the same operations)
DENSE_ABOVE = 0.5
_SAME_SIZE_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}
_UNSUPPORTED = ("amsgrad", "maximize", "capturable", "differentiable")


def row_sparse_parameters(model: nn.Module, *, tokens_per_step: int) -> list[nn.Parameter]:
    """The text tower's token tables worth a row-sparse update: trainable `nn.Embedding` weights with dense
    gradients and at least ROWS_PER_STEP_TOKEN times more rows than the `tokens_per_step` a step's batches hold
    (positional and type embeddings are far smaller and stay with torch's AdamW)."""
    return [
        module.weight
        for module in model.text.modules()
        if isinstance(module, nn.Embedding)
        and not module.sparse
        and module.weight.requires_grad
        and module.num_embeddings >= ROWS_PER_STEP_TOKEN * tokens_per_step
    ]


def adamw_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: float,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """AdamW's moment and Adam-term update, in place, with the operations of torch's single-tensor AdamW in its
    order (the weight decay comes before, on the whole table)."""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


class RowSparseAdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose `row_params` (2-d token tables) are updated on their rows in use only, with the
    same result (see the module docstring); `dense_above` is the fraction of rows in use above which a table is
    updated whole."""

    def __init__(
        self,
        params: Iterable,
        *,
        row_params: Sequence[nn.Parameter],
        dense_above: float = DENSE_ABOVE,
        **adamw,
    ):
        super().__init__(params, **adamw)
        bad = sorted({key for group in self.param_groups for key in _UNSUPPORTED if group[key]})
        if bad:
            raise ValueError(f"row-sparse AdamW does not implement {', '.join(bad)}")
        owned = {id(p) for group in self.param_groups for p in group["params"]}
        self.row_params = [p for p in row_params if id(p) in owned]
        if any(p.ndim != 2 for p in self.row_params):
            raise ValueError("row-sparse AdamW updates 2-d tables (rows x width) only")
        self.dense_above = dense_above
        self._in_use: dict[int, torch.Tensor] = {}  # id(table) -> bool per row: moments may be non-zero
        # the grad scaler unscales every gradient and skips non-finite steps itself (fused AdamW would do it inside
        # its kernel, which the row-sparse tables do not go through)
        self._step_supports_amp_scaling = False

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """torch's AdamW step for every parameter but the token tables, then the tables' row-sparse step."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        held = {id(p): p.grad for p in self.row_params if p.grad is not None}
        tables = [p for p in self.row_params if id(p) in held]
        for p in tables:
            p.grad = None  # torch's AdamW leaves a parameter without a gradient alone
        try:
            _adamw_step(self)
        finally:
            for p in tables:
                p.grad = held[id(p)]
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in held:
                    self._table_step(p, held[id(p)], group)
        return loss

    def _table_step(self, param: nn.Parameter, grad: torch.Tensor, group: dict) -> None:
        """One AdamW step of a token table: decay every row, the Adam update on the rows in use."""
        if grad.is_sparse:
            raise ValueError("row-sparse AdamW needs dense gradients (an nn.Embedding with sparse=False)")
        state = self.state[param]
        if not state:
            self._init_state(param, state, group)
        in_use = self._in_use.get(id(param))
        if in_use is None:
            in_use = self._in_use[id(param)] = _rows_with_moments(state)
        in_use |= nonzero_rows(grad)
        state["step"] += 1
        step, lr = state["step"].item(), float(group["lr"])
        if group["weight_decay"] != 0:
            param.mul_(1 - lr * group["weight_decay"])
        hp = {"step": step, "lr": lr, "betas": group["betas"], "eps": group["eps"]}
        rows = in_use.nonzero().squeeze(1)
        if rows.numel() > self.dense_above * param.shape[0]:
            adamw_update(param, grad, state["exp_avg"], state["exp_avg_sq"], **hp)
            return
        parts = [t.index_select(0, rows) for t in (param, grad, state["exp_avg"], state["exp_avg_sq"])]
        adamw_update(*parts, **hp)
        for target, part in zip((param, state["exp_avg"], state["exp_avg_sq"]), (parts[0], parts[2], parts[3])):
            target.index_copy_(0, rows, part)

    @staticmethod
    def _init_state(param: nn.Parameter, state: dict, group: dict) -> None:
        """The state torch's AdamW creates on a parameter's first step (its `step` where torch puts it)."""
        on_device = group["fused"] or group["capturable"]
        wide = torch.get_default_dtype() == torch.float64 and not group["fused"]  # torch's _get_scalar_dtype
        dtype = torch.float64 if wide else torch.float32
        state["step"] = torch.zeros((), dtype=dtype, device=param.device if on_device else "cpu")
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    def rows_in_use(self, table: nn.Parameter) -> torch.Tensor | None:
        """Bool per row of `table`: the rows its steps update (None before its first step or after a load)."""
        return self._in_use.get(id(table))

    def load_state_dict(self, state_dict: dict) -> None:
        """AdamW's load; the rows in use are found again from the loaded moments."""
        super().load_state_dict(state_dict)
        self._in_use.clear()


def _adamw_step(optimizer: torch.optim.AdamW) -> None:
    """torch's AdamW step without the wrapper that runs the step hooks, which torch puts around the step of every
    optimizer class it has built: our own step is wrapped too, and its hooks must run once per step."""
    step = torch.optim.AdamW.step
    (step.__wrapped__ if getattr(step, "hooked", False) else step)(optimizer)


def nonzero_rows(table: torch.Tensor) -> torch.Tensor:
    """Bool per row: any entry whose bits are not all zero (NaN and -0.0 count, as does any tiny value). One pass
    of aminmax over the bits as integers, with no table-sized temporary: a tenth of what `ne(0).any(1)` costs."""
    bits = table.view(_SAME_SIZE_INT[table.element_size()])
    low, high = torch.aminmax(bits, dim=1)
    return low.ne(0) | high.ne(0)


def _rows_with_moments(state: dict) -> torch.Tensor:
    """Bool per row: any non-zero entry in either moment (all-zero rows get exactly the decay from AdamW)."""
    return nonzero_rows(state["exp_avg"]) | nonzero_rows(state["exp_avg_sq"])
