"""Agreement of a model's teacher-forced logits with llama.cpp's golden top-32 data."""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    top1_confident: float  # top-1 agreement where llama.cpp's top-1 leads its second by >= 1.0
    top1_all: float
    mean_kl: float  # KL(llama.cpp || kt) over llama.cpp's top-32 tokens, renormalised
    n_positions: int
    n_confident: int

    def __str__(self):
        return (f"top-1 confident {self.top1_confident:.2%} ({self.n_confident} positions), "
                f"top-1 all {self.top1_all:.2%} ({self.n_positions}), mean KL {self.mean_kl:.5f}")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(golden: dict, logits_fn) -> Agreement:
    hits_conf = n_conf = hits = n = 0
    kls = []
    for seq in golden["sequences"]:
        ids = seq["prompt_ids"] + seq["greedy_ids"]
        ours = np.asarray(logits_fn(ids), dtype=np.float64)  # [len, vocab]
        for pos, (top_ids, top_logits) in enumerate(zip(seq["top_ids"], seq["top_logits"])):
            row = ours[pos]
            ref_best, ours_best = top_ids[0], int(row.argmax())
            hits += ours_best == ref_best
            n += 1
            if top_logits[0] - top_logits[1] >= 1.0:
                n_conf += 1
                hits_conf += ours_best == ref_best
            p = np.exp(_log_softmax(np.asarray(top_logits, dtype=np.float64)))
            log_q = _log_softmax(row[top_ids])
            kls.append(float((p * (np.log(p) - log_q)).sum()))
    return Agreement(hits_conf / max(n_conf, 1), hits / n, float(np.mean(kls)), n, n_conf)
