"""Times DeepCTR-Torch's DIN or DIEN on the arrays of one benchmark setting; run inside the DeepCTR virtualenv.

Usage (by ``train_throughput.py``): ``python deepctr_worker.py JOB.json`` with
``{"model": "din" | "dien", "npz": path, "threads": 2, "batch": 1024, "warmup": 2, "steps": 8, "budget_s": 20,
"malloc_tuning": false}`` (``true``: apply ``dhan.allocator.tune_malloc`` first, as dhan's commands do).
Prints one JSON line ``{"samples_per_s", "steps", "peak_rss_mb", "deepctr_version"}``.

Shapes as our models in the benchmark: item and category embeddings of 64 (query/key D = 128), activation unit
80-40-1 sigmoid, head 200-80-1 ReLU, Adam (lr 1e-3), no L2 (``l2_reg_embedding=0``), no dropout, no BN in the head.
DIN: raw (unnormalised) attention weights, as our ``din`` default. DIEN: GRU extractor with the auxiliary net
100-50-1 on sampled negatives, softmax attention, AUGRU. The training step is ``fit``'s inner loop (forward, BCE sum
+ regularisation + auxiliary loss, backward, step) on pre-built input tensors, without ``fit``'s DataLoader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import ATT_HIDDEN, EMBED_DIM, HEAD_ACTIVATION, HEAD_HIDDEN, NUM_ITEMS, peak_rss_mb, time_steps


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    if job.get("malloc_tuning"):
        # the allocator setting dhan's commands apply (stdlib only, so importable here without installing dhan)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from dhan.allocator import tune_malloc

        if not tune_malloc():
            raise SystemExit("malloc tuning requested but not available on this platform")
    torch.set_num_threads(job["threads"])
    import deepctr_torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIEN, DIN

    data = np.load(job["npz"])
    t = data["hist_item"].shape[1]
    n_cate = int(data["num_categories"]) + 2
    vocab = NUM_ITEMS + 2
    feats = [
        SparseFeat("item", vocab, embedding_dim=EMBED_DIM),
        SparseFeat("cate", n_cate, embedding_dim=EMBED_DIM),
        VarLenSparseFeat(SparseFeat("hist_item", vocab, EMBED_DIM, embedding_name="item"), t, length_name="seq_len"),
        VarLenSparseFeat(SparseFeat("hist_cate", n_cate, EMBED_DIM, embedding_name="cate"), t, length_name="seq_len"),
    ]
    columns = {
        "item": data["target_item"],
        "cate": data["target_cate"],
        "hist_item": data["hist_item"],
        "hist_cate": data["hist_cate"],
        "seq_len": np.full(len(data["target_item"]), t),
    }
    common = {"l2_reg_embedding": 0.0, "dnn_dropout": 0, "device": "cpu", "seed": 1024}
    if job["model"] == "din":
        model = DIN(
            feats,
            ["item", "cate"],
            dnn_hidden_units=HEAD_HIDDEN,
            dnn_activation=HEAD_ACTIVATION,
            att_hidden_size=ATT_HIDDEN,
            att_activation="sigmoid",
            att_weight_normalization=False,
            **common,
        )
    else:
        feats += [
            VarLenSparseFeat(SparseFeat("neg_hist_item", vocab, EMBED_DIM, embedding_name="item"), t, "seq_len"),
            VarLenSparseFeat(SparseFeat("neg_hist_cate", n_cate, EMBED_DIM, embedding_name="cate"), t, "seq_len"),
        ]
        columns["neg_hist_item"] = data["neg_item"]
        columns["neg_hist_cate"] = data["neg_cate"]
        model = DIEN(
            feats,
            ["item", "cate"],
            gru_type="AUGRU",
            use_negsampling=True,
            alpha=1.0,
            dnn_hidden_units=HEAD_HIDDEN,
            dnn_activation=HEAD_ACTIVATION,
            att_hidden_units=ATT_HIDDEN,
            att_activation="sigmoid",
            att_weight_normalization=True,
            **common,
        )
    # the input matrix fit() builds: every feature's columns in feature_index order, as float
    parts = []
    for name, (start, end) in sorted(model.feature_index.items(), key=lambda kv: kv[1][0]):
        col = np.asarray(columns[name], dtype=np.float64).reshape(len(data["target_item"]), -1)
        assert col.shape[1] == end - start, name
        parts.append(col)
    x_all = torch.from_numpy(np.concatenate(parts, axis=1)).float()
    y_all = torch.from_numpy(data["label"]).float()
    batch = job["batch"]
    n_batches = len(y_all) // batch
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(i: int) -> None:
        k = i % n_batches
        x, y = x_all[k * batch : (k + 1) * batch], y_all[k * batch : (k + 1) * batch]
        y_pred = model(x).squeeze()
        optim.zero_grad()
        loss = F.binary_cross_entropy(y_pred, y, reduction="sum")
        total = loss + model.get_regularization_loss() + model.aux_loss
        total.backward()
        optim.step()

    seconds, steps = time_steps(step, job["warmup"], job["steps"], job["budget_s"])
    out = {
        "samples_per_s": batch / seconds,
        "steps": steps,
        "peak_rss_mb": peak_rss_mb(),
        "deepctr_version": deepctr_torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
