"""Peers of skvq's weight-quantization benchmark: per-tensor and per-output-channel quantizers
of the weights of ``nn.Linear`` layers.

A weight ``W`` has shape ``(out, in)``; "per channel" means one codebook (or one uniform grid)
per row of ``W``. The matrix peers take a float32 numpy ``W`` and return ``(W_hat, info)``:
the dequantized float32 weight of the same shape and a dict with at least ``"seconds"``
(wall clock, ``time.perf_counter``). The model peers take a torch model, quantize every
``nn.Linear`` weight of a deep copy and return ``(model, seconds)``; the copy's Linear weights
are plain float tensors holding the dequantized values (:func:`linear_weights` reads them).

* :func:`rtn_per_channel` / :func:`rtn_per_tensor`: uniform round-to-nearest, asymmetric
  min-max with an integer zero point (GPTQ's and torchao's RTN baseline), vectorised numpy.
* :func:`kmeans_per_row` / :func:`kmeans_per_tensor`: scikit-learn ``KMeans`` on the scalar
  weights, optionally weighted by an importance (SqueezeLLM: sensitivity-weighted k-means per
  output channel; :func:`fisher_importance` gives its squared-gradient sensitivity).
* :func:`coremltools_palettize`: coremltools' ``PostTrainingPalettizer`` (optimal 1-D k-means,
  ``kmeans1d``); :func:`coremltools_skm`: its ``SKMPalettizer`` (Fisher-sensitivity-weighted
  k-means, needs calibration data and a loss); :func:`coremltools_palettize_matrix` applies the
  former to one matrix.
* :func:`torchao_codebook`: torchao's ``CodebookWeightOnlyConfig`` (prototype
  ``codebook_coreml``: coremltools' LUT k-means, scikit-learn ``KMeans`` for float32 weights),
  on a model or one matrix.

coremltools and torchao are optional: without them (or when they fail here) their functions
raise :class:`PeerUnavailable` with the reason, and the benchmark's rows read "n/a".
Installed with ``pip install -c <(echo torch==2.13.0) coremltools==9.0 torchao==0.18.0``.
"""

import contextlib
import copy
import io
import logging
import os
import tempfile
import time

import numpy as np

GRANULARITIES = ("per_tensor", "per_channel")


class PeerUnavailable(RuntimeError):
    """A peer cannot run here (package missing, or failing with this torch); the message says
    why. The benchmark reports such a peer as "n/a (<message>)"."""


def na(exc):
    """The table cell of an unavailable peer."""
    return f"n/a ({exc})"


def _check(n_bits, granularity=None):
    if not 1 <= int(n_bits) <= 8:
        raise ValueError(f"n_bits must be in 1..8, got {n_bits}")
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


@contextlib.contextmanager
def _quiet(*logger_names):
    """Raise the given loggers to ERROR and swallow Python-level stderr (tqdm bars)."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_NOISY = ("coremltools", "torchao", "torch.utils._pytree")


# ---------------------------------------------------------------------------------------------
# Optional packages


def coremltools_module():
    """coremltools, or None when it is not installed (its import chatter silenced)."""
    try:
        with _quiet(*_NOISY):
            import coremltools
    except ImportError:
        return None
    return coremltools


def torchao_module():
    try:
        with _quiet(*_NOISY):
            import torchao
    except ImportError:
        return None
    return torchao


def peer_versions():
    """Versions of the peers' packages (None where not installed)."""
    import sklearn

    versions = {"scikit-learn": sklearn.__version__}
    try:
        import torch
        versions["torch"] = torch.__version__
    except ImportError:
        versions["torch"] = None
    for name, module in (("coremltools", coremltools_module()), ("torchao", torchao_module())):
        versions[name] = getattr(module, "__version__", "?") if module else None
    return versions


def peer_versions_line():
    """One line for the report header."""
    return "Peers: " + ", ".join(f"{k} {v}" if v else f"{k} not installed"
                                 for k, v in peer_versions().items()) + "."


# ---------------------------------------------------------------------------------------------
# Matrix peers: numpy in, (W_hat, info) out


def _as_matrix(W):
    W = np.asarray(W, dtype=np.float32)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (out, in), got shape {W.shape}")
    return W


def _rtn(W, n_bits, axis):
    """Asymmetric min-max round-to-nearest over ``axis`` (None: whole tensor)."""
    levels = 2 ** n_bits - 1
    kw = {"axis": axis, "keepdims": True} if axis is not None else {}
    # As GPTQ's Quantizer and torchao's choose_qparams_affine: the range includes 0, so that 0
    # is exactly representable (identical to plain min-max for rows with both signs).
    w_min = np.minimum(W.min(**kw), 0.0).astype(np.float64)
    w_max = np.maximum(W.max(**kw), 0.0).astype(np.float64)
    scale = (w_max - w_min) / levels
    constant = scale == 0  # an all-zero row: represented exactly by the level 0
    scale = np.where(constant, 1.0, scale)
    zero = np.round(-w_min / scale)
    q = np.clip(np.round(W / scale) + zero, 0, levels)
    return ((q - zero) * scale).astype(np.float32)


def rtn_per_channel(W, n_bits):
    """Uniform round-to-nearest, one grid of ``2**n_bits`` levels per output channel (row).

    scale = (max - min) / (2**n_bits - 1), integer zero point = round(-min / scale), with min
    and max of the row extended to include 0 (GPTQ / torchao RTN). Returns ``(W_hat, info)``.
    """
    _check(n_bits)
    W = _as_matrix(W)
    start = time.perf_counter()
    W_hat = _rtn(W, int(n_bits), axis=1)
    return W_hat, {"seconds": time.perf_counter() - start}


def rtn_per_tensor(W, n_bits):
    """As :func:`rtn_per_channel` with one grid for the whole matrix."""
    _check(n_bits)
    W = _as_matrix(W)
    start = time.perf_counter()
    W_hat = _rtn(W, int(n_bits), axis=None)
    return W_hat, {"seconds": time.perf_counter() - start}


def _kmeans_1d(values, n_clusters, sample_weight, n_init, random_state):
    from sklearn.cluster import KMeans

    x = values.reshape(-1, 1)
    n_distinct = len(np.unique(x))
    if n_distinct <= n_clusters:  # fewer distinct values than codewords: exact
        return values.copy()
    if sample_weight is not None and not np.any(sample_weight > 0):
        sample_weight = None  # a dead unit's row has no gradient: unweighted, as skvq does
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=random_state)
    km.fit(x, sample_weight=sample_weight)
    return km.cluster_centers_[km.labels_, 0].astype(np.float32)


def kmeans_per_row(W, n_bits, importance=None, n_init=1, random_state=0):
    """scikit-learn ``KMeans(n_clusters=2**n_bits)`` on each row's values, weighted by
    ``importance[row]`` when given (SqueezeLLM's sensitivity-weighted per-channel k-means).

    ``importance``: None or an array of W's shape (non-negative weights). A Python loop over
    the rows, as users run it; a row with at most ``2**n_bits`` distinct values is kept as is
    (exact; scikit-learn would warn and duplicate centroids). Returns ``(W_hat, info)``; info
    has ``"seconds"``.
    """
    _check(n_bits)
    W = _as_matrix(W)
    if importance is not None:
        importance = np.asarray(importance, dtype=np.float64)
        if importance.shape != W.shape:
            raise ValueError(f"importance has shape {importance.shape}, W has {W.shape}")
    k = 2 ** int(n_bits)
    W_hat = np.empty_like(W)
    start = time.perf_counter()
    for i in range(W.shape[0]):
        W_hat[i] = _kmeans_1d(W[i], k, None if importance is None else importance[i],
                              n_init, random_state)
    return W_hat, {"seconds": time.perf_counter() - start}


def kmeans_per_tensor(W, n_bits, importance=None, n_init=1, random_state=0):
    """scikit-learn ``KMeans(n_clusters=2**n_bits)`` on all the values of ``W`` (one codebook),
    weighted by ``importance`` (W's shape) when given. Returns ``(W_hat, info)``."""
    _check(n_bits)
    W = _as_matrix(W)
    sample_weight = None
    if importance is not None:
        sample_weight = np.asarray(importance, dtype=np.float64)
        if sample_weight.shape != W.shape:
            raise ValueError(f"importance has shape {sample_weight.shape}, W has {W.shape}")
        sample_weight = sample_weight.ravel()
    start = time.perf_counter()
    W_hat = _kmeans_1d(W.ravel(), 2 ** int(n_bits), sample_weight, n_init,
                       random_state).reshape(W.shape)
    return W_hat, {"seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------------
# Model helpers


def linear_weights(model):
    """``{name: W}`` for every ``nn.Linear`` of ``model``: its weight as float32 numpy (out, in),
    dequantized when it is a torchao quantized tensor."""
    import torch

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            if hasattr(w, "dequantize") and type(w) not in (torch.Tensor, torch.nn.Parameter):
                w = w.dequantize()
            out[name] = w.detach().float().cpu().numpy().copy()
    return out


def fisher_importance(model, dataloader, loss_fn):
    """SqueezeLLM's / coremltools SKM's sensitivity: the sum over the batches of the squared
    gradient of ``loss_fn(model, batch)`` for every ``nn.Linear`` weight.

    Returns ``{name: importance}`` (float64 numpy, the weight's shape), the keys as in
    :func:`linear_weights`. The model is not modified (gradients of a deep copy). Note that a
    loss minimised at the current weights (e.g. distillation to the model itself) has zero
    gradients: use a task or pre-training loss.
    """
    import torch

    model = copy.deepcopy(model)
    model.train(False)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    acc = {n: torch.zeros_like(m.weight, dtype=torch.float64) for n, m in linears.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    for batch in dataloader:
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        for n, m in linears.items():
            if m.weight.grad is not None:
                acc[n] += m.weight.grad.double() ** 2
    return {n: a.numpy() for n, a in acc.items()}


def _linear_model(W):
    import torch

    W = _as_matrix(W)
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    return torch.nn.Sequential(lin)


# ---------------------------------------------------------------------------------------------
# coremltools


def _coremltools_palettization():
    ct = coremltools_module()
    if ct is None:
        raise PeerUnavailable("coremltools not installed")
    try:
        with _quiet(*_NOISY):
            from coremltools.optimize.torch import palettization
            from coremltools._deps import _HAS_KMEANS1D
    except Exception as exc:  # noqa: BLE001 - any import failure makes the peer unavailable
        raise PeerUnavailable(f"coremltools {ct.__version__}: coremltools.optimize.torch "
                              f"fails to import: {type(exc).__name__}: {exc}") from exc
    if not _HAS_KMEANS1D:
        raise PeerUnavailable(f"coremltools {ct.__version__}: its kmeans1d extension is "
                              "missing")
    return palettization


def _coremltools_module_config(cls, n_bits, granularity, **extra):
    kw = {"n_bits": int(n_bits), **extra}
    if granularity == "per_channel":
        kw.update(granularity="per_grouped_channel", group_size=1, channel_axis=0)
    else:
        kw.update(granularity="per_tensor")
    return cls(**kw)


def _plain_weights(model):
    """Drop coremltools' ``_COREML_/...`` metadata buffers so the model is a plain torch model
    again (its weights already hold the dequantized values)."""
    for module in model.modules():
        for key in [k for k in module._buffers if k.startswith("_COREML_")]:
            del module._buffers[key]
    return model


def coremltools_palettize(model, n_bits, granularity, fast_kmeans=True, keep_metadata=False):
    """coremltools' post-training palettization of every ``nn.Linear`` weight of a deep copy.

    ``PostTrainingPalettizer`` with ``ModulePostTrainingPalettizerConfig(n_bits, granularity=
    "per_tensor")`` or ``("per_grouped_channel", group_size=1, channel_axis=0)`` (one LUT per
    output channel) for ``nn.Linear`` only (not the embeddings). Its clustering is ``kmeans1d``
    (optimal 1-D k-means, dynamic programming). ``fast_kmeans`` is coremltools'
    ``enable_fast_kmeans_mode`` (default True, as users run it): the weights are cast to float16
    and rounded to 4 decimals before clustering (the unique values, weighted by their counts),
    the LUT is then applied to the float32 weights.

    Returns ``(model, seconds)``: the copy, whose Linear weights are plain float32 parameters
    holding the dequantized weights (``_COREML_/weight/lut`` metadata buffers are removed
    unless ``keep_metadata``), and the time of ``compress`` (not of the copy).
    """
    _check(n_bits, granularity)
    pal = _coremltools_palettization()
    import torch

    cfg = pal.PostTrainingPalettizerConfig(module_type_configs={
        torch.nn.Linear: _coremltools_module_config(
            pal.ModulePostTrainingPalettizerConfig, n_bits, granularity,
            enable_fast_kmeans_mode=bool(fast_kmeans))})
    model = copy.deepcopy(model)
    try:
        with _quiet(*_NOISY):
            start = time.perf_counter()
            model = pal.PostTrainingPalettizer(model, cfg).compress(inplace=True)
            seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        raise PeerUnavailable(f"coremltools PostTrainingPalettizer failed: "
                              f"{type(exc).__name__}: {exc}") from exc
    return (model if keep_metadata else _plain_weights(model)), seconds


def coremltools_palettize_matrix(W, n_bits, granularity, fast_kmeans=True):
    """:func:`coremltools_palettize` of one matrix (wrapped in a bias-free ``nn.Linear``).
    Returns ``(W_hat, info)``."""
    model, seconds = coremltools_palettize(_linear_model(W), n_bits, granularity,
                                           fast_kmeans=fast_kmeans)
    return linear_weights(model)["0"], {"seconds": seconds}


def coremltools_skm(model, n_bits, granularity, dataloader=None, loss_fn=None,
                    sensitivity=None):
    """coremltools' ``SKMPalettizer`` (sensitive k-means: k-means weighted by the Fisher
    sensitivity, squared gradients of ``loss_fn(model, batch)`` over ``dataloader``) of every
    ``nn.Linear`` weight of a deep copy.

    Either ``dataloader`` and ``loss_fn`` (coremltools computes and normalises the
    sensitivity; no download, the caller supplies the calibration batches), or ``sensitivity``:
    ``{linear name: importance array of the weight's shape}`` (e.g. :func:`fisher_importance`),
    used as given. Returns ``(model, seconds)`` as :func:`coremltools_palettize`; with a
    dataloader, ``seconds`` includes the sensitivity computation.
    """
    _check(n_bits, granularity)
    pal = _coremltools_palettization()
    import torch

    cfg = pal.SKMPalettizerConfig(module_type_configs={
        torch.nn.Linear: _coremltools_module_config(
            pal.ModuleSKMPalettizerConfig, n_bits, granularity)})
    model = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = None
        if sensitivity is not None:
            # Every Linear weight the palettizer visits needs an entry.
            missing = [n for n, m in model.named_modules()
                       if isinstance(m, torch.nn.Linear) and n not in sensitivity]
            if missing:
                raise ValueError(f"sensitivity lacks the Linear layers {missing}")
            path = os.path.join(tmp, "sensitivity.pt")
            torch.save({f"{name}.weight": torch.as_tensor(np.asarray(imp, dtype=np.float32))
                        for name, imp in sensitivity.items()}, path)
        elif dataloader is None or loss_fn is None:
            raise ValueError("coremltools_skm needs dataloader and loss_fn, or sensitivity")
        try:
            with _quiet(*_NOISY):
                start = time.perf_counter()
                model = pal.SKMPalettizer(model, cfg).compress(
                    dataloader=dataloader, loss_fn=loss_fn, sensitivity_path=path,
                    inplace=True)
                seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001
            raise PeerUnavailable(f"coremltools SKMPalettizer failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return _plain_weights(model), seconds


# ---------------------------------------------------------------------------------------------
# torchao


def _torchao_codebook():
    ao = torchao_module()
    if ao is None:
        raise PeerUnavailable("torchao not installed")
    if coremltools_module() is None:
        raise PeerUnavailable(f"torchao {ao.__version__}: its codebook_coreml quantizer "
                              "needs coremltools >= 8.3")
    try:
        with _quiet(*_NOISY):
            from torchao.prototype.quantization import codebook_coreml
            from torchao.quantization import quantize_
    except Exception as exc:  # noqa: BLE001
        raise PeerUnavailable(f"torchao {ao.__version__}: codebook_coreml fails to import: "
                              f"{type(exc).__name__}: {exc}") from exc
    return codebook_coreml, quantize_


def _code_dtype(n_bits):
    import torch

    return torch.uint8 if n_bits == 8 else getattr(torch, f"uint{n_bits}")


def torchao_codebook(model_or_W, n_bits, granularity, force_kmeans1d=False):
    """torchao's codebook (LUT) weight-only quantization, ``torchao.prototype.quantization.
    codebook_coreml``: ``quantize_(model, CodebookWeightOnlyConfig(dtype=torch.uint<n_bits>,
    block_size=[-1, -1] (per tensor) or [1, -1] (one LUT per output channel)))`` on every
    ``nn.Linear``. Its k-means is coremltools' ``_get_kmeans_lookup_table_and_weight``:
    scikit-learn ``KMeans(k-means++, n_init=1, tol=1e-2, random_state=0)`` for float32
    weights, or optimal 1-D ``kmeans1d`` with ``force_kmeans1d``.

    With a torch model: quantizes a deep copy and returns ``(model, seconds)``, the copy's
    Linear weights replaced by plain parameters holding the dequantized weights (torchao leaves
    ``CodebookQuantizedTensor`` weights that dequantize at every forward; the conversion is not
    timed). With a numpy matrix ``(out, in)``: returns ``(W_hat, info)``.
    """
    _check(n_bits, granularity)
    cb, quantize_ = _torchao_codebook()
    import torch

    block_size = [-1, -1] if granularity == "per_tensor" else [1, -1]
    dtype = _code_dtype(int(n_bits))
    if isinstance(model_or_W, torch.nn.Module):
        model = copy.deepcopy(model_or_W)
        try:
            with _quiet(*_NOISY):
                start = time.perf_counter()
                if force_kmeans1d:
                    for module in model.modules():
                        if isinstance(module, torch.nn.Linear):
                            module.weight = torch.nn.Parameter(
                                _torchao_dequantized(cb, module.weight, dtype, block_size,
                                                     True), requires_grad=False)
                else:
                    quantize_(model, cb.CodebookWeightOnlyConfig(dtype=dtype,
                                                                 block_size=block_size))
                seconds = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001
            raise PeerUnavailable(f"torchao codebook quantize_ failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and hasattr(module.weight, "codebook"):
                module.weight = torch.nn.Parameter(module.weight.dequantize().detach(),
                                                   requires_grad=False)
        return model, seconds
    W = _as_matrix(model_or_W)
    try:
        with _quiet(*_NOISY):
            start = time.perf_counter()
            W_hat = _torchao_dequantized(cb, torch.from_numpy(W), dtype, block_size,
                                         force_kmeans1d)
            seconds = time.perf_counter() - start
    except Exception as exc:  # noqa: BLE001
        raise PeerUnavailable(f"torchao codebook failed: {type(exc).__name__}: {exc}") from exc
    return W_hat.numpy(), {"seconds": seconds}


def _torchao_dequantized(cb, weight, dtype, block_size, force_kmeans1d):
    import torch

    from torchao.quantization.quant_primitives import _DTYPE_TO_BIT_WIDTH

    weight = weight.detach().float()
    lut, codes = cb.choose_qparams_and_quantize_codebook_coreml(
        weight, dtype, block_size, force_kmeans1d=force_kmeans1d)
    # As CodebookQuantizedTensor.dequantize: codes indexed as int32 (uint8 indexing fails).
    return cb.dequantize_codebook(codes.to(torch.int32), lut, _DTYPE_TO_BIT_WIDTH[dtype],
                                  block_size, output_dtype=torch.float32)
