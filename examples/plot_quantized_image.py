"""
==============================
Quantizing a grayscale image
==============================

A photograph from scikit-learn's sample images is converted to grayscale, reduced in size,
and quantized to 4 and 8 gray levels (2 and 3 bits per pixel) by each scalar quantizer of
skvq. The image is passed as ``X`` directly: its rows are the samples and every pixel is one
entry, so one codebook of gray levels is shared by the whole image and ``transform``
returns one code per pixel.

``weighting="count"`` makes every method minimise the squared error over the pixels (each
gray level weighted by how many pixels hold it). The error is reported as the peak
signal-to-noise ratio, ``PSNR = 10 log10(1 / MSE)`` for pixels in [0, 1]; higher is better.
"""

# %%
# The image
# ---------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_sample_image

from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)

rgb = load_sample_image("china.jpg").astype(np.float64) / 255.0
gray = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
# Average blocks of 4 x 4 pixels: 427 x 640 -> 106 x 160.
h, w = (s // 4 * 4 for s in gray.shape)
image = gray[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
print(f"image of {image.shape[0]} x {image.shape[1]} pixels, "
      f"{np.unique(image).size} distinct gray values")

# %%
# Quantize with every method
# --------------------------
quantizers = {
    "l1 + least squares": lambda n: L1LeastSquareQuantizer(n_values=n, weighting="count"),
    "l0 (exact)": lambda n: L0LeastSquareQuantizer(n_values=n, weighting="count"),
    "k-means + LS": lambda n: KMeansLSQuantizer(
        n_values=n, weighting="count", random_state=0),
    "k-means": lambda n: KMeansQuantizer(n_values=n, weighting="count", random_state=0),
    "Gaussian mixture": lambda n: GaussianMixtureQuantizer(
        n_values=n, weighting="count", random_state=0),
}
levels = [4, 8]

reconstructions = {}
for n_values in levels:
    for name, make in quantizers.items():
        quantizer = make(n_values).fit(image)
        codes = quantizer.transform(image)  # uint8, one code per pixel
        reconstruction = quantizer.inverse_transform(codes)
        psnr = 10 * np.log10(1.0 / -quantizer.score(image))
        reconstructions[n_values, name] = (reconstruction, quantizer.n_values_, psnr)
        print(f"{n_values} levels, {name:<18} codes {codes.dtype}, "
              f"{quantizer.n_values_} values, PSNR {psnr:5.2f} dB")

# %%
# The quantized images
# --------------------
# With so few levels the differences are visible in the smooth regions (the sky, the
# roof). The exact l0 solution is the best any 4- or 8-level quantizer can do on this
# image, and k-means finds it too; the Gaussian mixture fits a density rather than the
# squared error and comes close; the l1 penalty merges gray levels by its own criterion,
# which costs about 2-3 dB.
n_cols = len(quantizers) + 1
fig, axes = plt.subplots(len(levels), n_cols, figsize=(2.4 * n_cols, 2.0 * len(levels) + 0.6))
for row, n_values in enumerate(levels):
    axes[row, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title("original", fontsize="small")
    for col, name in enumerate(quantizers, start=1):
        reconstruction, n_reached, psnr = reconstructions[n_values, name]
        axes[row, col].imshow(reconstruction, cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"{name}\n{n_reached} levels, {psnr:.1f} dB",
                                 fontsize="small")
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()
