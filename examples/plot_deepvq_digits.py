"""
=============================================================
DeepVQ: binary codes from one forward pass (digits and MNIST)
=============================================================

:class:`~skvq.neural.DeepVQ` is an auto-encoder whose encoder outputs the code itself:
``L`` bits, the signs of ``L`` tanh units. No codebook of ``2**L`` centroids is stored or
searched, so the code length is not limited by k-means' exponential cost. This example
trains DeepVQ on scikit-learn's digits (8 x 8 images) at several code lengths ``L``, shows
reconstructions of held-out digits, and compares the test MSE with k-means vector
quantization (``PQ(n_subspaces=1, n_bits=L)``, possible only for small ``L``) and with the
best product quantizer of the same rate, then shows MNIST reconstructions at L = 10, 16 and
32 bits when MNIST is found (:func:`skvq.datasets.find_mnist`). See :ref:`deepvq` for the
method.
"""

# %%
# Data
# ----
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skvq import PQ
from skvq.neural import DeepVQ

torch.set_num_threads(1)  # networks this small run fastest on one thread
X = load_digits().data.astype(np.float32)
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
print(f"{len(X_train)} training and {len(X_test)} test images of {X.shape[1]} pixels")

# %%
# Train DeepVQ at several code lengths
# ------------------------------------
# The training alternates the paper's B-step (binary codes ``B`` by the penalty method,
# networks fixed) and W-step (one gradient step on the networks, ``B`` fixed) on every
# mini-batch. The first epochs use stochastic bits (``warmup_epochs``), the decoder has its
# own weights with dropout, and the last epochs fit the decoder to the test-time codes
# (``finetune_epochs``): the documented improvements over the paper's schedule.
code_lengths = [4, 8, 16, 32]
models = {}
for n_bits in code_lengths:
    models[n_bits] = DeepVQ(
        n_bits=n_bits, hidden_sizes=(128, 64), tied_weights=False, decoder_hidden=(64, 256),
        dropout=0.1, warmup_epochs=30, max_epochs=45, finetune_epochs=10, batch_size=64,
        lr=2e-3, b_step_size=0.3, rho=1e-4, rho_growth=3.0, random_state=0,
    ).fit(X_train)

deepvq_mse = {L: -m.score(X_test) for L, m in models.items()}

# %%
# k-means VQ and PQ at the same rates
# -----------------------------------
# k-means needs ``2**L`` centroids (at most the 1,347 training images: ``L <= 10``); PQ
# splits the 64 pixels into ``M`` blocks of ``L / M`` bits (the best of a few splits).
kmeans_mse = {L: -PQ(n_subspaces=1, n_bits=L, random_state=0).fit(X_train).score(X_test)
              for L in code_lengths if 2**L <= len(X_train)}
pq_mse = {}
for L in code_lengths:
    splits = [(L // b, b) for b in (2, 4, 8) if L % b == 0 and L // b <= X.shape[1]]
    pq_mse[L] = min(-PQ(n_subspaces=m, n_bits=b, random_state=0).fit(X_train).score(X_test)
                    for m, b in splits)
for L in code_lengths:
    km = f"{kmeans_mse[L]:.2f}" if L in kmeans_mse else "  n/a"
    print(f"L={L:2d}  DeepVQ {deepvq_mse[L]:.2f}  k-means {km}  best PQ {pq_mse[L]:.2f}")

# %%
# On 1,347 images of 64 pixels the networks are small and data are scarce: the best product
# quantizer gives a lower test MSE than DeepVQ at every rate here, and k-means does at the
# rates it can reach. DeepVQ's point is the cost of coding: one forward pass whatever ``L``,
# with no ``2**L`` codebook to train, store or search. The MNIST benchmark
# (:doc:`/benchmarks/bench_deepvq_table1`) compares them at the paper's scale.
#
# Codes and their storage
# -----------------------
# ``transform`` gives ``(n, L)`` bits; ``pack_codes`` stores them in ``ceil(L / 8)`` bytes,
# and ``inverse_transform`` accepts either form.
model = models[16]
bits = model.transform(X_test[:3])
packed = model.pack_codes(bits)
print(bits)
print(packed, packed.dtype)
assert np.allclose(model.inverse_transform(packed), model.inverse_transform(bits))

# %%
# Reconstructions of held-out digits
# ----------------------------------
n_show = 8
rows = [("original", X_test[:n_show])]
rows += [(f"DeepVQ L={L}", models[L].inverse_transform(models[L].transform(X_test[:n_show])))
         for L in code_lengths]
fig, axes = plt.subplots(len(rows), n_show, figsize=(n_show * 0.9, len(rows) * 1.0))
for r, (name, images) in enumerate(rows):
    for c in range(n_show):
        ax = axes[r, c]
        ax.imshow(images[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("Held-out digits and their DeepVQ reconstructions")
plt.tight_layout()

# %%
# Test MSE against the code length
# --------------------------------
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(code_lengths, [deepvq_mse[L] for L in code_lengths], "o-", label="DeepVQ")
ax.plot(code_lengths, [pq_mse[L] for L in code_lengths], "s--", label="PQ (best split)")
ax.plot(sorted(kmeans_mse), [kmeans_mse[L] for L in sorted(kmeans_mse)], "^:",
        label="k-means VQ")
ax.set_xlabel("bits per image (L)")
ax.set_ylabel("test MSE per pixel")
ax.set_xscale("log", base=2)
ax.set_xticks(code_lengths, [str(L) for L in code_lengths])
ax.legend()
ax.set_title("digits: distortion against rate")
plt.tight_layout()

# %%
# MNIST reconstructions at several code lengths
# ---------------------------------------------
# With MNIST's test images (``../shared/data/mnist`` or ``$SKVQ_MNIST``; skipped when they are
# absent), DeepVQ is trained on the first 3,000 images with small networks and 15 epochs
# (a few seconds per code length: an illustration; the full-size training and its Table 1
# numbers are in :doc:`/benchmarks/bench_deepvq_table1`), and codes the last 8 images.
from skvq.datasets import find_mnist, load_mnist  # noqa: E402

if find_mnist() is None:
    print("MNIST not found: set SKVQ_MNIST to the folder of its IDX files to see this part")
else:
    images, _ = load_mnist()
    images = images.reshape(len(images), -1).astype(np.float32)
    mnist_train, mnist_test = images[:3000], images[-n_show:]
    rows = [("original", mnist_test)]
    for n_bits in (10, 16, 32):
        mnist_model = DeepVQ(
            n_bits=n_bits, hidden_sizes=(256,), tied_weights=False, decoder_hidden=(256,),
            dropout=0.1, warmup_epochs=10, max_epochs=15, batch_size=128, lr=2e-3,
            b_step_size=0.3, rho=1e-4, rho_growth=3.0, random_state=0,
        ).fit(mnist_train)
        rec = mnist_model.inverse_transform(mnist_model.transform(mnist_test))
        rows.append((f"L={n_bits}", rec))
        mse = np.mean((rec - mnist_test) ** 2)
        print(f"MNIST L={n_bits}: MSE of these {n_show} images {mse:.4f}")
    fig, axes = plt.subplots(len(rows), n_show, figsize=(n_show * 0.9, len(rows) * 1.0))
    for r, (name, imgs) in enumerate(rows):
        for c in range(n_show):
            axes[r, c].imshow(imgs[c].reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("MNIST test images and their DeepVQ reconstructions")
    plt.tight_layout()
plt.show()
