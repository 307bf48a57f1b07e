"""
=========================================
Compressing a network's weights
=========================================

A small PyTorch MLP is trained on scikit-learn's digits, then every ``nn.Linear`` weight is
quantized by :func:`skvq.nn.quantize_model` with the exact l0 quantizer
(:class:`~skvq.L0LeastSquareQuantizer`, ``weighting="count"``: the codebook minimises the
squared error of the weight) at 1 to 5 bits: one codebook per tensor, or one per output
channel. The quantized layers store bit-packed codes and their codebooks and decode the
weight in ``forward``; the report counts the codebooks in the bits per weight.

Per channel costs ``n_values`` codebook entries per output channel (here in float16), and
keeps the accuracy at fewer code bits: the rate-accuracy curve is what to look at, not the
code width alone. The squared-gradient (Fisher) importance of each weight, from
:func:`skvq.nn.fisher_importance`, makes the codebooks spend their values where the loss is
sensitive.
"""

# %%
# A small network on the digits
# -----------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from skvq import L0LeastSquareQuantizer
from skvq.nn import fisher_importance, quantize_model

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.3,
                                                    random_state=0)
X_train, X_test = (torch.as_tensor(a, dtype=torch.float32) for a in (X_train, X_test))
y_train, y_test = (torch.as_tensor(a) for a in (y_train, y_test))

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                      nn.Linear(64, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for epoch in range(60):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(X_train), y_train).backward()
    optimizer.step()
model.eval()


def accuracy(net):
    with torch.no_grad():
        return float((net(X_test).argmax(1) == y_test).float().mean())


print(f"float model: test accuracy {accuracy(model):.3f}")

# %%
# Quantize, per tensor and per channel
# ------------------------------------
batches = [(X_train[i:i + 1], y_train[i:i + 1]) for i in range(300)]
fisher = fisher_importance(
    model, lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]), batches)

settings = {
    "per tensor": dict(granularity="tensor"),
    "per channel": dict(granularity="channel"),
    "per channel + Fisher": dict(granularity="channel", importance=fisher),
}
curves = {name: [] for name in settings}
for n_bits in range(1, 6):
    quantizer = L0LeastSquareQuantizer(n_values=2**n_bits, weighting="count")
    for name, options in settings.items():
        qmodel, report = quantize_model(model, quantizer, codebook_dtype=torch.float16,
                                        **options)
        curves[name].append((report.summary()["bits_per_weight"], accuracy(qmodel)))

print(report)  # the last setting: 5 bits per channel with Fisher importance

# %%
# The rate-accuracy curve
# -----------------------
fig, ax = plt.subplots(figsize=(6, 4))
for name, points in curves.items():
    ax.plot(*zip(*points), marker="o", label=name)
ax.axhline(accuracy(model), color="k", lw=0.8, ls="--", label="float32 (32 bits/weight)")
ax.set_xlabel("bits per weight (codes + float16 codebooks)")
ax.set_ylabel("test accuracy")
ax.set_title("MLP on the digits, weights quantized by skvq")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# The quantized model stores codes, not floats
# --------------------------------------------
qmodel, report = quantize_model(model, L0LeastSquareQuantizer(16, weighting="count"))
layer = qmodel[0]
print(layer)
print("packed codes:", tuple(layer.packed_weight.shape), layer.packed_weight.dtype,
      "- codebooks:", tuple(layer.codebook.shape))
summary = report.summary()
print(f"{summary['bytes_before']} bytes -> {summary['bytes_after']} bytes "
      f"({summary['compression_ratio']:.1f}x), {summary['bits_per_weight']:.2f} bits/weight")
print("state_dict keys of layer 0:", list(layer.state_dict()))
