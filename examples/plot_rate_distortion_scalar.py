"""
===========================================
Rate-distortion curves of scalar quantizers
===========================================

Every scalar quantizer of skvq is fitted to the pixels of scikit-learn's digits data set
(1,797 images of 8 x 8 pixels, integer values 0 to 16) for a range of codebook sizes, and
its mean squared error (MSE) per pixel is plotted against its rate, ``log2(n_values_)`` bits
per pixel.

The digits are mostly background: value 0 makes up about half of the pixels. The
estimators therefore use ``weighting="count"``, which weights every distinct value by how
often it occurs and so minimises the MSE of the whole array (the paper's default,
``weighting="unique"``, counts each distinct value once). See :ref:`scalar` for the methods.
"""

# %%
# Fit every quantizer at every rate
# ---------------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)

X = load_digits().data
print(f"{X.shape[0]} images, {X.shape[1]} pixels each, {np.unique(X).size} distinct values")

quantizers = {
    "l1 + least squares (Alg. 1-2)": lambda n: L1LeastSquareQuantizer(
        n_values=n, weighting="count"),
    "l1 without least squares": lambda n: L1LeastSquareQuantizer(
        n_values=n, refit=False, weighting="count"),
    "l0, exact (eq. 16)": lambda n: L0LeastSquareQuantizer(n_values=n, weighting="count"),
    "k-means + least squares (Alg. 3)": lambda n: KMeansLSQuantizer(
        n_values=n, weighting="count", random_state=0),
    "k-means": lambda n: KMeansQuantizer(n_values=n, weighting="count", random_state=0),
    "Gaussian mixture": lambda n: GaussianMixtureQuantizer(
        n_values=n, weighting="count", random_state=0),
}
n_values_grid = [2, 3, 4, 6, 8, 11, 16]

results = {}
for name, make in quantizers.items():
    rates, mse = [], []
    for n_values in n_values_grid:
        quantizer = make(n_values).fit(X)
        rates.append(quantizer.bits_per_sample_ / quantizer.n_features_in_)
        mse.append(-quantizer.score(X))
    results[name] = (np.array(rates), np.array(mse))

# %%
# The MSE at each codebook size
# -----------------------------
# ``bits_per_sample_`` is the rate of a whole row (64 pixels); divided by
# ``n_features_in_`` it is ``log2(n_values_)``, the bits per pixel.
header = f"{'n_values':<32}" + "".join(f"{n:>8d}" for n in n_values_grid)
print(header)
for name, (rates, mse) in results.items():
    print(f"{name[:32]:<32}" + "".join(f"{e:8.3f}" for e in mse))

# %%
# Rate-distortion curves
# ----------------------
# The exact l0 solver (optimal 1-D k-means) is the lower envelope: no quantizer with the
# same number of values does better on the training data. k-means and its least-squares
# refit (Alg. 3) reach it with up to 4 values and stay within a few percent above; the
# Gaussian mixture does not minimise the squared error and lags; the l1 penalty merges
# values by a criterion of its own (the paper's parametrisation ties the first level to 0
# and makes jumps between close values expensive), and the raw l1 solution without the
# least-squares refit is shrunk towards its neighbours, hence the much larger error.
fig, ax = plt.subplots(figsize=(7, 4.5))
markers = "osD^vx"
for (name, (rates, mse)), marker in zip(results.items(), markers):
    ax.plot(rates, mse, marker=marker, label=name)
ax.set_yscale("log")
ax.set_xlabel("rate: log2(n_values_), bits per pixel")
ax.set_ylabel("MSE per pixel")
ax.set_title("Digits: distortion against rate")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize="small")
fig.tight_layout()

# %%
# Where the codebooks sit
# -----------------------
# With 4 values, each method's codebook is drawn over the histogram of the pixel values
# (one row of markers per method; their height means nothing).
# With ``weighting="count"`` the l0 solver spends a value on the background (0) and
# spreads the others over the strokes; the paper's ``weighting="unique"`` treats the 17
# values alike and places its 4 values evenly, which about doubles the error here.
values, counts = np.unique(X, return_counts=True)
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.bar(values, counts / counts.sum(), width=0.8, color="0.8", label="pixel values")
codebooks = {
    "l0, count": L0LeastSquareQuantizer(n_values=4, weighting="count").fit(X),
    "l0, unique (paper)": L0LeastSquareQuantizer(n_values=4).fit(X),
    "l1 + least squares, count": L1LeastSquareQuantizer(n_values=4, weighting="count").fit(X),
    "Gaussian mixture, count": GaussianMixtureQuantizer(
        n_values=4, weighting="count", random_state=0).fit(X),
}
for height, ((name, quantizer), marker) in enumerate(zip(codebooks.items(), "osD^")):
    y = np.full(quantizer.n_values_, 0.45 - 0.06 * height)
    ax.plot(quantizer.codebook_, y, marker, ms=8,
            label=f"{name}: MSE {-quantizer.score(X):.2f}")
ax.set_xlabel("pixel value")
ax.set_ylabel("fraction of pixels")
ax.set_title("Codebooks with 4 values")
ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
fig.tight_layout()
plt.show()
