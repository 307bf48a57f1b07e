"""
=====================================================
Rate-distortion curves of PQ, OPQ and k-means
=====================================================

Vector quantizers code a whole image by a few integers. This example codes scikit-learn's
digits (1,797 images of 8 x 8 pixels, values 0 to 16) with k-means (``PQ(n_subspaces=1)``),
product quantization (:class:`~skvq.PQ`) and optimized product quantization
(:class:`~skvq.OPQ`), and plots the mean squared error (MSE) per pixel of held-out images
against the code length in bits per image, ``bits_per_sample_ = n_subspaces * n_bits``.

Every code length ``L`` can be split into ``n_subspaces * n_bits`` in several ways. For
each ``L`` the split is chosen by 3-fold cross-validation on the training images
(:class:`~sklearn.model_selection.GridSearchCV`, scored by the negative MSE); the chosen
quantizer is then evaluated on the test images. See :ref:`pq` for the methods.
"""

# %%
# Data and the splits of each code length
# ---------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from skvq import OPQ, PQ

X = load_digits().data.astype(np.float32)
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
n_train = X_train.shape[0]
print(f"{n_train} training and {X_test.shape[0]} test images of {X.shape[1]} pixels")

code_lengths = [4, 6, 8, 9, 10, 12, 16, 24, 32, 48, 64]


def splits(n_bits_per_image, max_bits):
    """(n_subspaces, n_bits) with n_subspaces * n_bits = L and 2**n_bits training vectors
    per cross-validation fold at least."""
    return [(n_bits_per_image // b, b) for b in range(1, max_bits + 1)
            if n_bits_per_image % b == 0 and n_bits_per_image // b <= X.shape[1]]


# A training fold holds two thirds of the training images: at most 2**9 centroids.
max_bits = int(np.log2(n_train * 2 // 3))
print("splits of 24 bits:", splits(24, max_bits))


# %%
# Fit every method at every code length
# -------------------------------------
# k-means needs ``2**L`` centroids and at least as many training images, so it stops at
# ``L = 9`` bits here. PQ and OPQ search every split; to keep the example fast, OPQ leaves
# out one-bit subspaces (the worst splits for PQ as well).
def best_quantizer(estimator, grid):
    search = GridSearchCV(estimator, grid, cv=3).fit(X_train)
    return search.best_estimator_


results = {"k-means (PQ, 1 subspace)": {}, "PQ": {}, "OPQ": {}}
for L in code_lengths:
    if L <= max_bits:
        km = PQ(n_subspaces=1, n_bits=L, random_state=0).fit(X_train)
        results["k-means (PQ, 1 subspace)"][L] = (-km.score(X_test), "1 x %d" % L)
    grid = [{"n_subspaces": [m], "n_bits": [b]} for m, b in splits(L, max_bits)]
    pq = best_quantizer(PQ(random_state=0), grid)
    results["PQ"][L] = (-pq.score(X_test), f"{pq.n_subspaces} x {pq.n_bits}")
    grid = [{"n_subspaces": [m], "n_bits": [b]} for m, b in splits(L, max_bits)
            if b > 1]
    if grid:
        opq = best_quantizer(OPQ(random_state=0), grid)
        results["OPQ"][L] = (-opq.score(X_test), f"{opq.n_subspaces} x {opq.n_bits}")

print(f"{'bits':>5}" + "".join(f"{name:>28}" for name in results))
for L in code_lengths:
    cells = [f"{r[L][0]:8.2f} ({r[L][1]:>7})" if L in r else "" for r in results.values()]
    print(f"{L:5d}" + "".join(f"{c:>28}" for c in cells))

# %%
# Test MSE against bits per image
# -------------------------------
# At a given rate, k-means (one codebook for the whole image) is the best of the three as
# long as it can be trained: with 8 bits it does better than PQ with 12. It runs out of
# training images at 9 bits. PQ goes on to any rate, at the price of splitting the image:
# cross-validation picks as few subspaces as the rate allows with the largest codebooks the
# folds support, and at 10 bits (two 5-bit codebooks) PQ is worse than k-means at 8. OPQ
# learns a rotation before splitting: where one subspace is chosen it is k-means, and with
# more it is a little better than PQ. The dashed line is the error of coding every image by
# the mean training image (0 bits).
mean_mse = float(np.mean((X_test - X_train.mean(axis=0)) ** 2))
fig, ax = plt.subplots(figsize=(7, 4.5))
# The three curves coincide up to 9 bits (one subspace), hence k-means' larger open markers.
styles = {"k-means (PQ, 1 subspace)": dict(marker="o", ms=11, mfc="none", lw=3, alpha=0.5),
          "PQ": dict(marker="D"), "OPQ": dict(marker="s", ms=5)}
for name, r in results.items():
    lengths = sorted(r)
    ax.plot(lengths, [r[L][0] for L in lengths], label=name, **styles[name])
ax.axhline(mean_mse, color="0.5", ls="--", lw=1, label="mean image (0 bits)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(code_lengths, [str(L) for L in code_lengths])
ax.set_xlabel("code length: bits per image (n_subspaces x n_bits)")
ax.set_ylabel("test MSE per pixel")
ax.set_title("Digits: distortion against rate (split chosen by cross-validation)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()

# %%
# What the codes look like
# ------------------------
# The first test images, and their reconstructions from 8, 16 and 32 bits by the OPQ
# quantizer chosen above (a 16-bit code is 2 bytes per image instead of 64 pixels).
shown = X_test[:8]
rows = {"original": shown}
for L in (8, 16, 32):
    m, b = (int(v) for v in results["OPQ"][L][1].split(" x "))
    opq = OPQ(n_subspaces=m, n_bits=b, random_state=0).fit(X_train)
    rows[f"OPQ {L} bits ({m} x {b})"] = opq.inverse_transform(opq.transform(shown))
fig, axes = plt.subplots(len(rows), len(shown), figsize=(8, 1.15 * len(rows)))
for axes_row, (name, images) in zip(axes, rows.items()):
    for ax, image in zip(axes_row, images):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=16)
        ax.set_xticks([])
        ax.set_yticks([])
    axes_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize="small")
fig.tight_layout()
plt.show()
