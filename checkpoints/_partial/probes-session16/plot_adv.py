"""The adversarial runs' curves for docs/training.md: held-out discriminator accuracy (chance 0.5) and the
discriminator's hinge loss (2 = zero logits) over training, one line per arm.

    python checkpoints/_partial/probes-session16/plot_adv.py docs/media/adversarial-heldout.png \
        "distilled, D=-1:checkpoints/_partial/probes-session16/adv-distill-d1.log.jsonl" ...
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

out, arms = sys.argv[1], [a.split(":", 1) for a in sys.argv[2:]]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for label, path in arms:
    rows = [json.loads(x) for x in open(path) if x.strip()]
    probe = [r for r in rows if "heldout_acc" in r]
    ax1.plot([r["step"] for r in probe], [r["heldout_acc"] for r in probe], marker="o", label=label)
    ax2.plot([r["step"] for r in rows], [r["loss_d"] for r in rows], label=label, alpha=0.8)
ax1.axhline(0.5, color="grey", ls="--", lw=1)
ax1.set(xlabel="step", ylabel="held-out accuracy", title="discriminator on held-out clips (chance 0.5)",
        ylim=(0.3, 0.8))
ax2.axhline(2.0, color="grey", ls="--", lw=1)
ax2.set(xlabel="step", ylabel="hinge loss", title="discriminator loss (2 = zero logits)")
ax1.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=110)
