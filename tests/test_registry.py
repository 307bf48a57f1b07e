"""The registry (skvq._registry) and everything derived from it agree.

A quantizer registered in one place only (exported but not registered, registered but not
importable, missing from ``skvq list`` or from the API page, a rate parameter the class does
not have) fails one of these tests.
"""

import importlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import skvq
import skvq.neural
from skvq import BaseQuantizer, cli
from skvq._registry import (QUANTIZERS, estimator_names, lookup, make_quantizer,
                            parameter_names, public_estimators)

API_PAGE = Path(__file__).resolve().parents[1] / "doc" / "api.rst"

requires_torch = pytest.mark.skipif(
    not all(QUANTIZERS[n].is_available() for n in QUANTIZERS if QUANTIZERS[n].neural),
    reason="torch and skorch are not installed")


def _documented():
    """``module.Name`` for every entry of an autosummary block in doc/api.rst."""
    names, module, in_block = set(), None, False
    for line in API_PAGE.read_text().splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = m.group(1)
        if line.startswith(".. autosummary::"):
            in_block = True
        elif in_block and line.startswith("   ") and not line.strip().startswith(":"):
            names.add(f"{module}.{line.strip()}")
        elif in_block and line.strip() and not line.startswith("   "):
            in_block = False
    return names


# ------------------------------------------------------------------------- the table itself

def test_entries_are_consistent():
    for name, entry in QUANTIZERS.items():
        assert entry.name == name
        assert entry.description and "\n" not in entry.description
        # neural estimators are given as "module:Name" so that the registry never imports torch
        assert entry.neural == isinstance(entry.estimator, str), name
        assert entry.neural == entry.module.startswith("skvq.neural."), name
        if entry.neural:
            assert entry.available is not None, f"{name}: a neural quantizer needs torch"


def test_presets_and_rate_parameters_exist_on_the_class():
    for name, entry in QUANTIZERS.items():
        if not entry.is_available():
            continue
        accepted = set(parameter_names(name))
        assert set(entry.preset) <= accepted, name
        if entry.rate_params is not None:
            assert set(entry.rate_params(96.0, 1000, 48)) <= accepted, name


def test_make_quantizer_applies_presets_and_drops_common_options():
    assert make_quantizer("l1").refit is False
    assert make_quantizer("L1LeastSquareQuantizer").refit is True  # a class name: its defaults
    assert make_quantizer("kmeans-vq", n_subspaces=3).n_subspaces == 3  # params over presets
    q = make_quantizer("l0-dp", n_values=5, random_state=0)  # l0-dp has no random_state
    assert q.n_values == 5 and "random_state" not in q.get_params()
    with pytest.raises(ValueError, match="Unknown quantizer 'nope'"):
        make_quantizer("nope")
    assert lookup("PQ") is QUANTIZERS["pq"]


def test_estimator_names_are_unique_and_in_registry_order():
    names = estimator_names()
    assert len(names) == len(set(names))
    assert names == list(dict.fromkeys(e.class_name for e in QUANTIZERS.values()))
    assert set(names) == set(estimator_names(neural=False)) | set(estimator_names(neural=True))


def test_public_estimators_lists_every_available_class_once():
    classical = public_estimators(neural=False)
    assert [c.__name__ for c in classical] == estimator_names(neural=False)
    assert all(issubclass(c, BaseQuantizer) for c in classical)


@requires_torch
def test_public_estimators_include_the_neural_ones():
    classes = public_estimators()
    assert [c.__name__ for c in classes] == estimator_names()
    assert all(issubclass(c, BaseQuantizer) for c in classes)


# ------------------------------------------------------------------------------ the imports

def test_top_level_names_come_from_the_registry():
    assert set(skvq._NEURAL) == set(estimator_names(neural=True)) | {"SoftConvexQuantizer"}
    # classical estimators are imported eagerly and exported; neural ones only lazily
    assert set(estimator_names(neural=False)) <= set(skvq.__all__)
    assert not set(estimator_names(neural=True)) & set(skvq.__all__)
    for name in estimator_names(neural=False):
        assert getattr(skvq, name) is lookup(name).resolve()
    assert set(skvq._NEURAL) <= set(dir(skvq))


def test_neural_lazy_table_comes_from_the_registry():
    lazy = skvq.neural._LAZY
    for entry in QUANTIZERS.values():
        if entry.neural:
            assert lazy[entry.class_name] == entry.module
    assert set(skvq._NEURAL) <= set(lazy)
    assert sorted(lazy) == skvq.neural.__all__


@requires_torch
def test_every_lazy_name_resolves():
    import skvq.neural.layers as layers

    for name, module in skvq.neural._LAZY.items():
        obj = getattr(skvq.neural, name)
        assert getattr(importlib.import_module(module), name) is obj, name
        if module == "skvq.neural.layers":
            assert name in layers.__all__ and getattr(layers, name) is obj
    for name in skvq._NEURAL:
        assert getattr(skvq, name) is getattr(skvq.neural, name)
    for entry in QUANTIZERS.values():
        if entry.neural:
            assert getattr(skvq, entry.class_name) is entry.resolve()


@requires_torch
def test_every_exported_quantizer_is_registered():
    """A BaseQuantizer subclass exported from skvq or skvq.neural must be in the registry."""
    registered = set(estimator_names())
    for module, names in ((skvq, skvq.__all__), (skvq, skvq._NEURAL),
                          (skvq.neural, skvq.neural.__all__)):
        for name in names:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseQuantizer) \
                    and obj is not BaseQuantizer:
                assert name in registered, f"{module.__name__}.{name} is not registered"


# -------------------------------------------------------------------------- command line

def test_cli_list_shows_every_entry():
    out = io.StringIO()
    assert cli.main(["list"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == len(QUANTIZERS)
    for line, (name, entry) in zip(lines, QUANTIZERS.items()):
        assert line.split()[0] == name
        assert f"{entry.class_name}(" in line and entry.description in line


def test_cli_accepts_every_registered_name():
    for name in list(QUANTIZERS) + estimator_names():
        if lookup(name).is_available():
            assert cli._check_method(name) == name
    with pytest.raises(cli._UsageError):
        cli._check_method("not-a-quantizer")


@pytest.mark.parametrize("n_samples, n_features, n_values", [
    (300, 8, 4), (300, 16, 16), (100, 6, 8)])  # the last: 2**6 codewords fit 100 rows
def test_rate_matching_of_vector_quantizers(n_samples, n_features, n_values):
    """pq and opq at the scalar quantizers' rate, D * log2(n_values) bits a row (a multiple
    of the bits of one codebook in these cases)."""
    X = np.random.default_rng(0).normal(size=(n_samples, n_features))
    rate = n_features * np.log2(n_values)
    for name in ("pq", "opq"):
        q = make_quantizer(name, random_state=0,
                           **QUANTIZERS[name].rate_params(rate, *X.shape)).fit(X)
        assert q.bits_per_sample_ == pytest.approx(rate)


def test_one_codebook_fits_the_rows():
    """kmeans-vq's codebook of 2**n_bits codewords is no larger than the number of rows."""
    for n_samples, n_bits in ((1797, 8), (100, 6), (64, 6), (3, 1)):
        assert QUANTIZERS["kmeans-vq"].rate_params(128.0, n_samples, 64) == {"n_bits": n_bits}


@requires_torch
@pytest.mark.parametrize("name, n_features, n_values", [
    ("deepvq", 6, 4), ("scq", 6, 8), ("vq-vae", 4, 8)])
def test_rate_matching_of_neural_quantizers(name, n_features, n_values):
    X = np.random.default_rng(0).normal(size=(32, n_features)).astype(np.float32)
    rate = n_features * np.log2(n_values)
    small = {"deepvq": {"hidden_sizes": (8,), "b_iter": 1},
             "scq": {"hidden_size": 8, "latent_dim": 2},
             "vq-vae": {"hidden_size": 8, "latent_dim": 2}}[name]
    q = make_quantizer(name, random_state=0, device="cpu", max_epochs=1, **small,
                       **QUANTIZERS[name].rate_params(rate, *X.shape)).fit(X)
    assert q.bits_per_sample_ == pytest.approx(rate)


# --------------------------------------------------------------------------------- the docs

def test_api_page_documents_every_registered_estimator():
    documented = _documented()
    missing = [n for n in estimator_names() if f"skvq.{n}" not in documented]
    assert not missing, f"not in doc/api.rst: {missing}"


def test_api_page_documents_every_lazy_neural_name():
    documented = _documented()
    missing = [n for n in skvq.neural._LAZY
               if f"skvq.neural.{n}" not in documented
               and not (n in skvq._NEURAL and f"skvq.{n}" in documented)]
    assert not missing, f"not in doc/api.rst: {missing}"
