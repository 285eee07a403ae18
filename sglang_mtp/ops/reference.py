"""Plain-PyTorch definitions of the fused ops.

These are the executable specification the C++ and CUDA kernels are tested against (and
the unfused baseline the kernel benchmark times). They favour clarity over speed and build
[R, V] intermediates freely.
"""

from __future__ import annotations

import torch


def confidence_scan_ref(logits, block_start, block_len, threshold, stop_token_ids=None, suppress_token_id=-1):
    """Reference for :func:`sglang_mtp.ops.confidence_scan` (same arguments and results).

    logits: [R, V]; block_start, block_len: int32 [B]; threshold: float32 [B];
    stop_token_ids: int64 [S] or None. Returns tokens int64 [R], confidence float32 [R],
    accept_len int32 [B].
    """
    x = logits.float().clone()  # [R, V]
    R, V = x.shape
    x = torch.where(torch.isnan(x), torch.full_like(x, float("-inf")), x)
    if 0 <= suppress_token_id < V:
        x[:, suppress_token_id] = float("-inf")
    tokens, confidence = _top1(x, suppress_token_id)
    accept = _accept_lengths(tokens, confidence, block_start, block_len, threshold, stop_token_ids)
    return tokens, confidence, accept


def _top1(x, suppress_token_id):
    # x: [R, V] float32 without NaN; the suppressed column already holds -inf.
    R, V = x.shape
    tokens = torch.argmax(x, dim=1)  # torch.argmax returns the first maximal index
    m = x.max(dim=1).values
    posinf = torch.isposinf(x)
    n_inf = posinf.sum(dim=1)
    finite_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    denom = torch.exp(x - finite_m[:, None]).sum(dim=1)
    confidence = torch.exp(m - finite_m) / denom
    # +inf rows: every +inf entry shares the mass equally; the first one is the argmax.
    confidence = torch.where(n_inf > 0, 1.0 / n_inf.clamp(min=1).float(), confidence)
    # Rows with no finite maximum (all -inf): the lowest index that may be predicted, p = 0.
    dead = torch.isneginf(m)
    fallback = 1 if (suppress_token_id == 0 and V > 1) else 0
    tokens = torch.where(dead, torch.full_like(tokens, fallback), tokens)
    confidence = torch.where(dead, torch.zeros_like(confidence), confidence)
    return tokens.long(), confidence.float()


def _accept_lengths(tokens, confidence, block_start, block_len, threshold, stop_token_ids):
    B = block_start.numel()
    accept = torch.zeros(B, dtype=torch.int32, device=tokens.device)
    stops = set() if stop_token_ids is None else set(stop_token_ids.tolist())
    for b in range(B):
        start, n, tau = int(block_start[b]), int(block_len[b]), float(threshold[b])
        run = 0
        while run < n and float(confidence[start + run]) >= tau:
            run += 1
        a = min(max(1, run), n)
        for j in range(a):
            if int(tokens[start + j]) in stops:
                a = j + 1
                break
        accept[b] = a
    return accept


def sample_scan_ref(logits, block_start, block_len, threshold, stop_token_ids, suppress_token_id,
                    inv_temperature, seed, position):
    """Reference for :func:`sglang_mtp.ops.sample_scan` (same arguments and results).

    Rows with inv_temperature 0 are confidence_scan's; a row with inv_temperature > 0 takes
    argmax(z + Gumbel noise) with z = logits * inv_temperature (NaN and the suppressed id are
    -inf) and confidence softmax(z) at that token, unless z has a +inf entry or no finite
    entry (then the greedy result stands).
    """
    from sglang_mtp.sampling import noise_uniform

    tokens, confidence, _ = confidence_scan_ref(logits, block_start, block_len, threshold, stop_token_ids,
                                                suppress_token_id)
    x = logits.float()
    R, V = x.shape
    z = x * inv_temperature[:, None]
    z = torch.where(torch.isnan(z), torch.full_like(z, float("-inf")), z)
    if 0 <= suppress_token_id < V:
        z[:, suppress_token_id] = float("-inf")
    u = torch.from_numpy(noise_uniform(seed.cpu().numpy(), position.cpu().numpy(), V)).to(z.device)
    keys = z + (-torch.log(-torch.log(u)))
    sampled_tok = torch.argmax(keys, dim=1)
    m = z.max(dim=1).values
    finite_m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    prob = torch.exp(z.gather(1, sampled_tok[:, None])[:, 0].double() - finite_m.double()) / torch.exp(
        z.double() - finite_m.double()[:, None]).sum(1)
    use = (inv_temperature > 0) & torch.isfinite(m) & ~torch.isposinf(z).any(1)
    tokens = torch.where(use, sampled_tok, tokens)
    confidence = torch.where(use, prob.clamp(max=1.0).float(), confidence)
    accept = _accept_lengths(tokens, confidence, block_start, block_len, threshold, stop_token_ids)
    return tokens, confidence, accept
