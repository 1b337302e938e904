"""The MoI step fused into three Triton kernels: logits [M, V] -> candidates, weights, mixtures.

Same math as :mod:`mixinputs.mixing` (the reference, and the path on CPU), made for the GPU decode
step: one pass over the logits, one gather of the K+1 embedding rows per row, three launches, no
host sync, and shapes that depend only on (M, V, width, D), so the step can be captured in a CUDA
graph. Every program works on one row (or a slice of it fixed by V or D alone), so a row's ids,
weights and mixture are bit-identical whatever M and whatever the other rows hold.

Recipe, per row b, with one width per engine (``C = width_k + 1``, the engine's largest K + 1):

1. ``_group_max_kernel``, grid (M, cdiv(V, GROUP·GROUPS_PER_PROGRAM)): the only full read of the
   logits. The max of every group of GROUP consecutive logits (64 up to V = 262,144, more
   above so that a row has at most 4,096 groups) -> scratch [M, V/GROUP] fp32.
2. ``_candidates_kernel``, grid (M,): the top-K groups by (max desc, group index asc), then the
   top-K logits inside those K groups by (value desc, id asc). Exact: a token outside the best K
   groups is beaten by the best token of each of them (K tokens), so it is not in the top-K. Each
   selection is K rounds of "max, then remove it" over distinct int64 keys (value bits ‖ index),
   so ties resolve the same way everywhere (lowest id first). Columns past the row's own K get
   score -inf; y is "in the top-K" if one of the row's own K ids is y (then its slot is -inf).
   -> ids [M, C] int64, scores [M, C] float32. (An engine may mask scores here.)
3. ``_mix_kernel``, grid (M, cdiv(D, BLOCK_D)): softmax over the C scores, normalized entropy,
   MoI or direct weights (every program of the row computes the same C numbers), then one [C,
   BLOCK_D] gather of the embedding rows with non-zero weight and the weighted sum in float32.
   -> weights [M, C] float32, mixed [M, D] in the embedding's dtype.

Bytes moved: the logits once (M·V·elt), 2·M·V/16 bytes of group maxima, M·K·64 logits again (L2),
the live candidates' embedding rows (at most M·C·D·elt) and the outputs. At M = 64, V = 152,064,
D = 5,120 in bf16: 19.5 + 1.2 + 0.2 + 13.8 + 0.7 = 35 MB, 10.5 µs at 3.35 TB/s.

K is at most ``MAX_TOP_K`` (128): each K costs two serial selection rounds per row. Beyond it,
and on CPU, engines use :mod:`mixinputs.mixing`.

``import mixinputs`` does not import this module; this module imports Triton when present (the
functions raise without it: check :func:`fused_step_available` first). Tests run the kernels on CPU
tensors under Triton's interpreter: ``TRITON_INTERPRET=1`` in the environment before this module
is imported (Triton reads it when the kernels are decorated).
"""

from __future__ import annotations

import torch

from mixinputs.mixing import Candidates

__all__ = ["MAX_TOP_K", "fused_candidates", "fused_mix", "fused_mix_step", "fused_step_available"]

MAX_TOP_K = 128  # the largest width_k the fused step takes
MAX_GROUPS = 4096  # groups per row in step 1 (the final selection reads K·GROUP logits per row)
_LOGITS_PER_PROGRAM = 8192  # step 1: the logits one program reads
_KEY_LOW = 0x7FFFFFFF  # key = ordered value << 32 | (_KEY_LOW - index): lower index wins ties
# Ordered int32 below every float (-inf maps to -2,139,095,041), and an int64 key below every key.
_PAD_ORDERED = -2147483000
_REMOVED = -2147483647 * 2**32


try:  # optional: without Triton the reference in mixinputs.mixing runs everywhere
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None


def _jit(fn):
    # Triton decides here, once, whether a kernel is compiled or interpreted (TRITON_INTERPRET).
    return fn if triton is None else triton.jit(fn)


@_jit
def _ordered(x):
    # float32 -> int32 in the same order (-0.0 counted as +0.0, as float comparison does).
    # The map is its own inverse on the bits.
    bits = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@_jit
def _group_max_kernel(
    logits_ptr,
    stride_m,
    stride_v,
    vocab,
    gmax_ptr,
    num_groups,
    GROUP: tl.constexpr,
    GROUPS_PER_PROGRAM: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1) * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)  # [G]
    cols = g[:, None] * GROUP + tl.arange(0, GROUP)[None, :]  # [G, GROUP]
    x = tl.load(
        logits_ptr + row * stride_m + cols.to(tl.int64) * stride_v,
        mask=cols < vocab,
        other=float("-inf"),
    )
    group_max = tl.max(x.to(tl.float32), axis=1)  # [G]
    tl.store(gmax_ptr + row * num_groups + g, group_max, mask=g < num_groups)


@_jit
def _candidates_kernel(
    logits_ptr,
    stride_m,
    stride_v,
    vocab,
    gmax_ptr,
    num_groups,
    sampled_ptr,
    row_k_ptr,
    ids_ptr,
    scores_ptr,
    K: tl.constexpr,
    KP: tl.constexpr,
    GROUP: tl.constexpr,
    GROUPS_P: tl.constexpr,
    KEY_LOW: tl.constexpr,
    PAD_ORDERED: tl.constexpr,
    REMOVED: tl.constexpr,
):
    C: tl.constexpr = K + 1
    row = tl.program_id(0).to(tl.int64)
    slot = tl.arange(0, KP)  # [KP]

    # 1. The K best groups of the row, by (max desc, group index asc).
    g = tl.arange(0, GROUPS_P)
    group_max = tl.load(gmax_ptr + row * num_groups + g, mask=g < num_groups, other=0.0)
    ordered = tl.where(g < num_groups, _ordered(group_max), PAD_ORDERED)
    key = (ordered.to(tl.int64) << 32) + (KEY_LOW - g).to(tl.int64)  # [GROUPS_P], distinct
    chosen = tl.zeros([KP], dtype=tl.int32)  # group index per slot
    for i in range(K):
        best = tl.max(key, axis=0)
        key = tl.where(key == best, REMOVED, key)
        chosen = tl.where(slot == i, (KEY_LOW - (best - ((best >> 32) << 32))).to(tl.int32), chosen)

    # 2. The K best logits inside them, by (value desc, id asc): [KP, GROUP] keys.
    cols = chosen[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    valid = (slot[:, None] < K) & (cols < vocab)
    x = tl.load(
        logits_ptr + row * stride_m + cols.to(tl.int64) * stride_v, mask=valid, other=0.0
    ).to(tl.float32)
    key2 = (_ordered(x).to(tl.int64) << 32) + (KEY_LOW - cols).to(tl.int64)
    key2 = tl.reshape(tl.where(valid, key2, REMOVED), [KP * GROUP])  # one-level reductions

    # 3. Write them in order; columns past the row's own K carry no probability.
    y = tl.load(sampled_ptr + row).to(tl.int64)
    row_k = tl.load(row_k_ptr + row)
    hits = tl.sum(tl.zeros([KP], dtype=tl.int32), axis=0)  # own top-K ids equal to y
    for i in range(K):
        best = tl.max(key2, axis=0)
        key2 = tl.where(key2 == best, REMOVED, key2)
        hi = best >> 32
        token = KEY_LOW - (best - (hi << 32))
        bits = hi.to(tl.int32)
        value = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.float32, bitcast=True)
        live = i < row_k
        tl.store(ids_ptr + row * C + i, token)
        tl.store(scores_ptr + row * C + i, tl.where(live, value, float("-inf")))
        hits += (live & (token == y)).to(tl.int32)

    # 4. The sampled token's slot: -inf when it is already one of the row's own K.
    y_logit = tl.load(logits_ptr + row * stride_m + y * stride_v).to(tl.float32)
    tl.store(ids_ptr + row * C + K, y)
    tl.store(scores_ptr + row * C + K, tl.where(hits > 0, float("-inf"), y_logit))


@_jit
def _mix_kernel(
    ids_ptr,
    scores_ptr,
    beta_ptr,
    direct_ptr,
    weight_ptr,
    stride_w,
    hidden,
    weights_ptr,
    out_ptr,
    stride_o,
    out_rows_ptr,
    C: tl.constexpr,
    CP: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HAS_OUT_ROWS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    c = tl.arange(0, CP)
    in_row = c < C

    # 1. Prior p = softmax(scores) over the C candidates (-inf: no mass).
    s = tl.load(scores_ptr + row * C + c, mask=in_row, other=float("-inf"))
    e = tl.exp(s - tl.max(s, axis=0))
    p = e / tl.sum(e, axis=0)
    # 2. H = entropy(p) / log(#non-zero), 0 for a single candidate, clamped to [0, 1].
    nonzero = p > 0.0
    plogp = tl.where(nonzero, p * tl.log(tl.where(nonzero, p, 1.0)), 0.0)
    entropy = -tl.sum(plogp, axis=0)
    log_n = tl.log(tl.maximum(tl.sum(nonzero.to(tl.float32), axis=0), 1.0))
    h = tl.where(log_n > 0.0, entropy / tl.maximum(log_n, 1e-30), 0.0)
    h = tl.minimum(tl.maximum(h, 0.0), 1.0)
    # 3. w = t·H·p + (1 − t·H)·onehot(y), t = 1/(β+1) (0 at β = inf); direct rows: w = p.
    t = 1.0 / (tl.load(beta_ptr + row).to(tl.float32) + 1.0)
    th = t * h
    w = th * p + (1.0 - th) * (c == C - 1).to(tl.float32)
    w = tl.where(tl.load(direct_ptr + row) != 0, p, w)
    if pid_d == 0:
        tl.store(weights_ptr + row * C + c, w, mask=in_row)

    # 4. h = Σ_c w_c · E[ids_c] over this program's BLOCK_D columns; rows of weight 0 unread.
    #    A row whose out_rows entry is negative is not mixed at all (another step writes it).
    ids = tl.load(ids_ptr + row * C + c, mask=in_row, other=0).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    out_row = row
    limit = hidden  # the columns read and written: none for a skipped row
    if HAS_OUT_ROWS:
        out_row = tl.load(out_rows_ptr + row).to(tl.int64)
        limit = tl.where(out_row >= 0, hidden, 0)
        out_row = tl.maximum(out_row, 0)
    live = in_row & (w != 0.0)
    emb = tl.load(
        weight_ptr + ids[:, None] * stride_w + d[None, :],
        mask=live[:, None] & (d < limit)[None, :],
        other=0.0,
    )
    mixed = tl.sum(w[:, None] * emb.to(tl.float32), axis=0)  # [BLOCK_D] float32
    if out_ptr.dtype.element_ty == tl.bfloat16:
        # Round to nearest even in integers first: the cast is then exact everywhere (Triton's
        # interpreter truncates float32 -> bfloat16; GPUs round, and so does this).
        bits = mixed.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        mixed = bits.to(tl.float32, bitcast=True)
    tl.store(out_ptr + out_row * stride_o + d, mixed.to(out_ptr.dtype.element_ty), mask=d < limit)


def _interpreting() -> bool:
    """Whether these kernels run under Triton's interpreter (decided when this module loaded)."""
    return triton is not None and type(_mix_kernel).__name__ == "InterpretedFunction"


def fused_step_available(device: torch.device | str) -> bool:
    """True where the fused step can run on ``device``: CUDA with Triton importable, or any device
    under Triton's interpreter (``TRITON_INTERPRET=1`` when this module was imported: the CPU
    tests).

    >>> fused_step_available("cpu") == _interpreting()
    True
    """
    if triton is None:
        return False
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available()
    return _interpreting()


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def fused_candidates(
    logits: torch.Tensor,
    sampled: torch.Tensor,
    row_top_k: torch.Tensor,
    width_k: int,
) -> Candidates:
    """``mixing.candidates_from_logits(logits, sampled, width_k, row_top_k)`` in two launches.

    ``logits`` [M, V] bf16/fp16/fp32 (any strides; -inf allowed), ``sampled`` [M] int,
    ``row_top_k`` [M] int (each in [1, width_k]), ``width_k`` the engine's fixed K. Returns
    ``ids`` [M, width_k + 1] int64 and ``scores`` [M, width_k + 1] float32; scores equal the
    reference's exactly, ids too up to the order of equal logits (here: lowest id first).

    >>> logits = torch.tensor([[0.0, 2.0, 1.0, 3.0]])
    >>> c = fused_candidates(logits, torch.tensor([0]), torch.tensor([2]), 3)
    >>> c.ids.tolist(), c.scores.tolist()
    ([[3, 1, 2, 0]], [[3.0, 2.0, -inf, 0.0]])
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [M, V], got shape {tuple(logits.shape)}")
    rows, vocab = logits.shape
    if sampled.shape != (rows,) or row_top_k.shape != (rows,):
        raise ValueError(
            f"sampled and row_top_k must be [M] = [{rows}], got {tuple(sampled.shape)} and "
            f"{tuple(row_top_k.shape)}"
        )
    if not 1 <= width_k <= min(vocab, MAX_TOP_K):
        raise ValueError(
            f"width_k must be in [1, min(V, {MAX_TOP_K})] = [1, {min(vocab, MAX_TOP_K)}] for the "
            f"fused step (use mixinputs.mixing above), got {width_k}"
        )
    device = logits.device
    if sampled.device != device or row_top_k.device != device:
        raise ValueError(f"sampled and row_top_k must be on the logits' device {device}")
    width = width_k + 1
    ids = torch.empty(rows, width, dtype=torch.long, device=device)
    scores = torch.empty(rows, width, dtype=torch.float32, device=device)
    if rows == 0:
        return Candidates(ids, scores)
    group = max(64, _next_pow2(_cdiv(vocab, MAX_GROUPS)))
    num_groups = _cdiv(vocab, group)
    group_max = torch.empty(rows, num_groups, dtype=torch.float32, device=device)
    _group_max_kernel[(rows, _cdiv(num_groups, _LOGITS_PER_PROGRAM // group))](
        logits,
        logits.stride(0),
        logits.stride(1),
        vocab,
        group_max,
        num_groups,
        GROUP=group,
        GROUPS_PER_PROGRAM=_LOGITS_PER_PROGRAM // group,
        num_warps=8,
    )
    kp = _next_pow2(width_k)
    groups_p = _next_pow2(max(num_groups, kp))
    _candidates_kernel[(rows,)](
        logits,
        logits.stride(0),
        logits.stride(1),
        vocab,
        group_max,
        num_groups,
        sampled,
        row_top_k,
        ids,
        scores,
        K=width_k,
        KP=kp,
        GROUP=group,
        GROUPS_P=groups_p,
        KEY_LOW=_KEY_LOW,
        PAD_ORDERED=_PAD_ORDERED,
        REMOVED=_REMOVED,
        num_warps=8 if max(groups_p, kp * group) >= 2048 else 4,
    )
    return Candidates(ids, scores)


def fused_mix(
    ids: torch.Tensor,
    scores: torch.Tensor,
    beta: torch.Tensor,
    direct: torch.Tensor,
    weight: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    out_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mixing.mixture_weights`` and ``mixing.mix_candidates`` in one launch.

    ``ids`` [M, C] int, ``scores`` [M, C] float32 (last column: the sampled token), ``beta`` [M]
    float (inf allowed), ``direct`` [M] bool, ``weight`` [V, D] the input embedding. Returns
    ``weights`` [M, C] float32 and ``mixed`` [M, D] in ``weight.dtype``: row b is written to
    ``out[b]``, or to ``out[out_rows[b]]`` when ``out_rows`` [M] is given (a slot table; ``out``
    is then returned whole); a row with ``out_rows[b] < 0`` gets its weights only (its input is
    written by another step: an engine's family rows), no embedding row is read for it.
    """
    if ids.dim() != 2 or scores.shape != ids.shape:
        raise ValueError(
            f"ids and scores must both be [M, C], got {tuple(ids.shape)} and {tuple(scores.shape)}"
        )
    rows, width = ids.shape
    if beta.shape != (rows,) or direct.shape != (rows,):
        raise ValueError(
            f"beta and direct must be [M] = [{rows}], got {tuple(beta.shape)} and "
            f"{tuple(direct.shape)}"
        )
    if weight.dim() != 2 or weight.stride(1) != 1:
        raise ValueError(
            f"weight must be a [V, D] tensor with unit column stride, got {weight.shape}"
        )
    ids, scores = ids.contiguous(), scores.float().contiguous()  # no-ops for fused_candidates'
    hidden = weight.shape[1]
    device = ids.device
    if any(t.device != device for t in (scores, beta, direct, weight)):
        raise ValueError(f"scores, beta, direct and weight must be on the ids' device {device}")
    weights = torch.empty(rows, width, dtype=torch.float32, device=device)
    if out is None:
        if out_rows is not None:
            raise ValueError("out_rows needs out, the table its rows index")
        out = torch.empty(rows, hidden, dtype=weight.dtype, device=device)
    elif (
        out.dim() != 2 or out.shape[1] != hidden or out.stride(1) != 1 or out.dtype != weight.dtype
    ):
        raise ValueError(
            f"out must be [*, D = {hidden}] {weight.dtype} with unit column stride, got "
            f"{out.dtype} {tuple(out.shape)}"
        )
    elif out_rows is None and out.shape[0] != rows:
        raise ValueError(f"out must have M = {rows} rows (or pass out_rows), got {out.shape[0]}")
    if rows == 0:
        return weights, out
    block_d = min(256, _next_pow2(hidden))
    _mix_kernel[(rows, _cdiv(hidden, block_d))](
        ids,
        scores,
        beta,
        direct.view(torch.uint8) if direct.dtype == torch.bool else direct,
        weight,
        weight.stride(0),
        hidden,
        weights,
        out,
        out.stride(0),
        out_rows if out_rows is not None else ids,  # unread when HAS_OUT_ROWS is False
        C=width,
        CP=_next_pow2(max(width, 2)),
        BLOCK_D=block_d,
        HAS_OUT_ROWS=out_rows is not None,
        num_warps=4,
    )
    return weights, out


def fused_mix_step(
    logits: torch.Tensor,
    sampled: torch.Tensor,
    row_top_k: torch.Tensor,
    width_k: int,
    beta: torch.Tensor,
    direct: torch.Tensor,
    weight: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    out_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole MoI step in three launches: ``(ids [M, C], weights [M, C], mixed [M, D])``.

    Equals ``candidates_from_logits(logits, sampled, width_k, row_top_k)`` then
    ``mixture_weights`` and ``mix_candidates`` (see :func:`fused_candidates`, :func:`fused_mix`).
    Engines that edit the scores between the two (a sampling prior's masks) call those two.
    """
    cands = fused_candidates(logits, sampled, row_top_k, width_k)
    weights, mixed = fused_mix(
        cands.ids, cands.scores, beta, direct, weight, out=out, out_rows=out_rows
    )
    return cands.ids, weights, mixed
