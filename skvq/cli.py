"""The ``skvq`` command: compare quantizers on real data, quantize and reconstruct arrays.

``skvq compare``
    runs every available quantizer on scikit-learn's digits (or ``--data FILE.npy``) and prints
    rate, MSE, fit time and encode time;
``skvq quantize IN.npy --method NAME --codes CODES.npy --model MODEL.joblib``
    fits a quantizer and writes the codes and the fitted model;
``skvq reconstruct CODES.npy --model MODEL.joblib --out OUT.npy``
    decodes codes with a fitted model;
``skvq list``
    lists the quantizers.

Arrays are ``.npy`` files written by :func:`numpy.save`: a 2-D array is (n_samples, n_features),
a 1-D array is one row; arrays of more dimensions, empty arrays, non-numeric or object arrays
(never unpickled) and data with NaN or infinity are refused. ``--param NAME=VALUE`` must name a
parameter of the chosen quantizer (for ``compare``: of at least one of the methods).

A mistake prints one line, ``skvq COMMAND: error: ...``, on stderr. The exit status is 2 for a
mistake on the command line (an option, a method or parameter name, a parameter value the
quantizer refuses), as for argparse's own errors, and 1 for a file or data that cannot be used
or a fit that fails.
"""

import argparse
import ast
import contextlib
import difflib
import math
import os
import re
import sys
import time
import warnings

import numpy as np
from sklearn.base import clone

from ._registry import (QUANTIZERS, available_quantizers, estimator_names, lookup,
                        make_quantizer, parameter_names)

# Options of `skvq compare` that set the parameter of the same name on every quantizer.
_COMPARE_OPTIONS = {"n_values": "--n-values", "weighting": "--weighting",
                    "random_state": "--random-state"}


class _UsageError(Exception):
    """A mistake on the command line: exit status 2, as for argparse's own errors."""


class _InputError(Exception):
    """A file or data that skvq cannot use: exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like the others (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _one_line(text):
    return re.sub(r"\s*\n\s*", " ", str(text).strip())


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


# ----------------------------------------------------------------------------------- arrays

def _read_npy(path, what, kinds):
    """The array in the ``.npy`` file ``path``, as 2-D, or an ``_InputError`` saying why not.

    The header is read first, so that a wrong file is refused before any data is read and
    object arrays are never unpickled. ``kinds`` are the accepted dtype kinds.
    """
    fmt = np.lib.format
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _InputError(f"cannot read the {what} file {path!r}: "
                          f"{exc.strerror or exc}") from None
    with f:
        prefix = f.read(len(fmt.MAGIC_PREFIX))
        if prefix != fmt.MAGIC_PREFIX:
            if not prefix:
                raise _InputError(f"the {what} file {path!r} is empty (0 bytes)")
            if prefix.startswith(b"PK\x03\x04"):
                raise _InputError(f"the {what} file {path!r} is a .npz archive; give one array "
                                  "saved with numpy.save (.npy)")
            raise _InputError(f"the {what} file {path!r} is not a .npy file (it starts with "
                              f"{prefix!r}, not numpy's {fmt.MAGIC_PREFIX!r}); save the array "
                              "with numpy.save (numpy.loadtxt reads a text file)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = fmt.read_array_header_2_0(f)
            else:  # 3.0 is written only for structured dtypes with non-latin-1 field names
                raise _InputError(f"the {what} file {path!r} has .npy format version "
                                  f"{version[0]}.{version[1]}; skvq reads numeric arrays "
                                  "(versions 1.0 and 2.0)")
        except ValueError as exc:
            raise _InputError(f"the {what} file {path!r} is not a valid .npy file: "
                              f"{exc}") from None
        if dtype.hasobject:
            raise _InputError(f"the {what} file {path!r} holds Python objects (dtype "
                              f"{dtype}), which skvq does not unpickle; save a numeric array")
        if dtype.kind not in kinds:
            needed = "integer codes" if kinds == "iu" else "real numbers"
            raise _InputError(f"the {what} file {path!r} has dtype {dtype}; skvq needs "
                              f"{needed}")
        if len(shape) == 0 or len(shape) > 2:
            raise _InputError(
                f"the {what} file {path!r} holds an array of shape {shape}; skvq takes a 2-D "
                "array (n_samples, n_features) or a 1-D array (one row): reshape it first, "
                "e.g. X.reshape(len(X), -1) for one row per sample")
        n_bytes = math.prod(shape) * dtype.itemsize
        if n_bytes == 0:
            raise _InputError(f"the {what} file {path!r} holds an empty array (shape {shape})")
        available = os.fstat(f.fileno()).st_size - f.tell()
        if available < n_bytes:
            raise _InputError(f"the {what} file {path!r} is truncated: its header says shape "
                              f"{shape} {dtype} ({n_bytes} bytes), but {available} bytes "
                              "follow the header")
        f.seek(0)
        try:
            array = fmt.read_array(f, allow_pickle=False)
        except ValueError as exc:
            raise _InputError(f"cannot read the {what} file {path!r}: {exc}") from None
    return array.reshape(1, -1) if array.ndim == 1 else array


def _load_data(path):
    """Data to quantize: finite real numbers."""
    X = _read_npy(path, "data", "biuf")
    if X.dtype.kind == "f":
        bad = ~np.isfinite(X)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            n_bad = int(bad.sum())
            entries = "1 entry" if n_bad == 1 else f"{n_bad} entries"
            raise _InputError(f"the data file {path!r} contains NaN or infinity ({entries}, "
                              f"the first at row {row}, column {col}); quantizers need finite "
                              "values")
    return X


def _npy_name(path):
    return path if path.endswith(".npy") else path + ".npy"  # as numpy.save names it


def _check_output(path, option):
    """Refuse an output path that cannot be written before minutes of fitting are spent."""
    if os.path.isdir(path):
        raise _UsageError(f"{option} {path!r} is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _UsageError(f"{option} {path!r}: the directory {parent!r} does not exist")


# --------------------------------------------------------------------- methods, parameters

def _check_method(name):
    """Refuse an unknown or unavailable quantizer name, suggesting the closest ones."""
    known = list(QUANTIZERS) + estimator_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise _UsageError(f"unknown quantizer {name!r}; {hint}see `skvq list` for the "
                          f"names ({', '.join(QUANTIZERS)})")
    if not lookup(name).is_available():
        raise _InputError(f"quantizer {name!r} needs an optional dependency that is not "
                          "installed (see `skvq list` and the installation guide)")
    return name


def _parse_params(pairs):
    """``--param NAME=VALUE`` pairs as a dict; VALUE is a Python literal or else a string."""
    params = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise _UsageError(f"--param takes NAME=VALUE, got {pair!r}")
        if name in params:
            raise _UsageError(f"--param {name} is given twice")
        try:
            params[name] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            params[name] = value
    return params


def _check_params(params, methods):
    """Refuse parameters that none of ``methods`` takes; the methods that take each one.

    :func:`make_quantizer` drops parameters a class does not have, so that one set of
    options builds every quantizer; names a user typed must exist, or a typo would be
    silently ignored.
    """
    takes = {m: set(parameter_names(m)) for m in methods}
    taken_by = {}
    for name in params:
        taken_by[name] = [m for m in methods if name in takes[m]]
        if taken_by[name]:
            continue
        accepted = sorted(set().union(*takes.values()))
        close = difflib.get_close_matches(name, accepted, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        if len(methods) == 1:
            entry = lookup(methods[0])
            who = (f"{entry.class_name} ({methods[0]})" if methods[0] != entry.class_name
                   else methods[0])
            raise _UsageError(f"--param {name}: {who} has no parameter {name!r}; {hint}"
                              f"its parameters: {', '.join(accepted)}")
        raise _UsageError(f"--param {name}: none of {', '.join(methods)} has a parameter "
                          f"{name!r}; {hint}their parameters: {', '.join(accepted)}")
    return taken_by


# ----------------------------------------------------------------------------- commands

def _describe_codebook(q):
    """A short description of a fitted quantizer's codebook for the tables."""
    if hasattr(q, "n_values_"):
        return f"{q.n_values_} values"
    if hasattr(q, "n_subspaces"):
        return f"{q.n_subspaces} x {2**q.n_bits}"
    return f"{q.bits_per_sample_:g} bits"


def _cmd_list(args, out):
    available = set(available_quantizers())
    for name, entry in QUANTIZERS.items():
        preset = ", ".join(f"{k}={v!r}" for k, v in entry.preset.items())
        flag = "" if name in available else "  [not installed]"
        print(f"{name:12s} {entry.class_name}({preset}): {entry.description}{flag}", file=out)
    return 0


def _cmd_compare(args, out):
    if args.methods:
        names = [_check_method(n.strip()) for n in args.methods.split(",") if n.strip()]
        if not names:
            raise _UsageError(f"--methods names no quantizer: {args.methods!r}")
    else:
        names = available_quantizers(include_neural=False)
    user_params = _parse_params(args.param)
    for name in user_params:
        if name in _COMPARE_OPTIONS:
            raise _UsageError(f"--param {name}: use {_COMPARE_OPTIONS[name]}, which sets it "
                              "for every quantizer")
    taken_by = _check_params(user_params, names)
    if args.data:
        X = _load_data(args.data).astype(np.float64)
        source = args.data
    else:
        from sklearn.datasets import load_digits

        X = load_digits().data
        source = "scikit-learn digits (1797 x 64, values 0-16)"
    for name, methods in taken_by.items():
        if len(methods) < len(names):
            print(f"--param {name} applies to {', '.join(methods)} only", file=sys.stderr)
    if not args.methods:
        missing = sorted(set(QUANTIZERS) - set(available_quantizers()))
        if missing:
            print(f"not installed, skipped: {', '.join(missing)} (see `skvq list`)",
                  file=sys.stderr)
        neural = [name for name, entry in QUANTIZERS.items() if entry.neural]
        print(f"neural quantizers run only when named: --methods {','.join(neural)}",
              file=sys.stderr)
    print(f"Data: {source}; {X.shape[0]} x {X.shape[1]}, {np.unique(X).size} distinct values; "
          f"n_values={args.n_values}, weighting={args.weighting}", file=out)
    # Vector and neural quantizers at the scalar quantizers' rate, D * log2(n_values) bits a row.
    rate = X.shape[1] * np.log2(args.n_values)
    rows, failed = [], []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", end=" ", file=sys.stderr, flush=True)
        entry = lookup(name)
        params = {"n_values": args.n_values, "weighting": args.weighting,
                  "random_state": args.random_state}
        if entry.rate_params is not None:
            params.update(entry.rate_params(rate, X.shape[0], X.shape[1]))
        q = make_quantizer(name, **{**params, **user_params})
        # Warm-up on a few rows so that timings exclude numba's one-off JIT/cache load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                clone(q).fit(X[:2])
            except (ValueError, TypeError):  # too few rows for this quantizer, or see below
                pass
        start = time.perf_counter()
        try:
            q.fit(X)
        except (ValueError, TypeError) as exc:
            print(f"failed: {_one_line(exc)}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        codes = q.transform(X)
        encode_time = time.perf_counter() - start
        mse = float(np.mean((X - q.inverse_transform(codes)) ** 2))
        print(f"{fit_time:.3f} s", file=sys.stderr, flush=True)
        codebook = _describe_codebook(q)
        rows.append((name, codebook, q.bits_per_sample_, q.bits_per_sample_ / X.shape[1],
                     mse, fit_time, encode_time))
    header = ("method", "codebook", "bits/sample", "bits/entry", "MSE", "fit s", "encode s")
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "---|" * len(header), file=out)
    for name, k, bps, bpe, mse, ft, et in rows:
        print(f"| {name} | {k} | {bps:.1f} | {bpe:.3f} | {mse:.6g} | {ft:.3f} | {et:.4f} |",
              file=out)
    if failed:
        raise _InputError(f"{len(failed)} of {len(names)} quantizers failed to fit: "
                          f"{', '.join(failed)} (their messages are above)")
    return 0


def _cmd_quantize(args, out):
    import joblib

    method = _check_method(args.method)
    params = _parse_params(args.param)
    _check_params(params, [method])
    _check_output(args.codes, "--codes")
    _check_output(args.model, "--model")
    X = _load_data(args.input)
    q = make_quantizer(method, **params)
    codes = q.fit_transform(X)
    np.save(args.codes, codes)
    joblib.dump(q, args.model)
    mse = float(np.mean((X - q.inverse_transform(codes)) ** 2))
    print(f"{type(q).__name__}: {_describe_codebook(q)}, {q.bits_per_sample_:.1f} bits/sample, "
          f"MSE {mse:.6g}; codes {codes.shape} {codes.dtype} -> {_npy_name(args.codes)}, "
          f"model -> {args.model}", file=out)
    return 0


def _load_model(path):
    """A fitted skvq quantizer from a joblib file, or an ``_InputError`` saying why not."""
    import joblib
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _InputError(f"cannot read the model file {path!r}: "
                          f"{exc.strerror or exc}") from None
    try:
        q = joblib.load(path)
    except ImportError as exc:
        raise _InputError(f"the model file {path!r} needs a module that is not installed: "
                          f"{exc}") from None
    except Exception as exc:  # unpickling fails in many ways, none of which gives a model
        raise _InputError(f"the model file {path!r} is not a model written by `skvq quantize` "
                          f"({type(exc).__name__}: {exc})") from None
    cls = type(q)
    if not (cls.__module__.split(".")[0] == "skvq" and hasattr(q, "inverse_transform")):
        kind = cls.__qualname__ if cls.__module__ == "builtins" else (
            f"{cls.__module__}.{cls.__qualname__}")
        raise _InputError(f"the model file {path!r} holds a {kind}, not a quantizer written "
                          "by `skvq quantize`")
    try:
        check_is_fitted(q)
    except NotFittedError:
        raise _InputError(f"the model file {path!r} holds an unfitted {cls.__name__}; "
                          "`skvq quantize` writes fitted ones") from None
    return q


def _cmd_reconstruct(args, out):
    _check_output(args.out, "--out")
    q = _load_model(args.model)
    codes = _read_npy(args.codes, "codes", "iu")
    X_rec = q.inverse_transform(codes)
    np.save(args.out, X_rec)
    print(f"reconstruction {X_rec.shape} {X_rec.dtype} -> {_npy_name(args.out)}", file=out)
    return 0


def build_parser():
    parser = _Parser(prog="skvq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="compare every available quantizer on real data")
    p.add_argument("--data", help=".npy file (2-D; 1-D is one row); default: sklearn digits")
    p.add_argument("--n-values", type=_int_at_least(1), default=4,
                   help="codebook size (default 4)")
    p.add_argument("--weighting", choices=["unique", "count"], default="count",
                   help="weight values by multiplicity (default: the table reports the MSE of "
                        "the whole array, which this minimises) or count each distinct value "
                        "once (the paper's choice and the estimators' default)")
    p.add_argument("--methods", help="comma-separated names (default: every available "
                                      "classical quantizer; name the neural ones to run them)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="estimator parameter for the methods that have it, repeatable "
                        "(e.g. --param n_init=3); it must exist on at least one method")
    p.add_argument("--random-state", type=_int_at_least(0), default=0)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("quantize", help="fit a quantizer, write codes and model")
    p.add_argument("input", help="input .npy file")
    p.add_argument("--method", required=True, help="quantizer name (see `skvq list`)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="estimator parameter, repeatable (e.g. --param n_values=16)")
    p.add_argument("--codes", required=True, help="output .npy for the codes")
    p.add_argument("--model", required=True, help="output file for the fitted model (joblib)")
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser("reconstruct", help="decode codes with a fitted model")
    p.add_argument("codes", help="codes .npy file")
    p.add_argument("--model", required=True,
                   help="fitted model written by `skvq quantize` (a joblib pickle: load only "
                        "models you trust)")
    p.add_argument("--out", required=True, help="output .npy for the reconstruction")
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("list", help="list the quantizers")
    p.set_defaults(func=_cmd_list)
    return parser


@contextlib.contextmanager
def _one_line_warnings(prefix):
    """Warnings as ``PREFIX: warning: Category: message`` lines, without source lines."""
    with warnings.catch_warnings():
        def show(message, category, filename, lineno, file=None, line=None):
            print(f"{prefix}: warning: {category.__name__}: {_one_line(message)}",
                  file=sys.stderr)

        warnings.showwarning = show
        yield


def main(argv=None, out=None):
    """Entry point of the ``skvq`` console script.

    Returns
    -------
    status : int
        0 on success, 2 for a mistake on the command line (as argparse), 1 for a file, data or
        fit that fails; the message is one line on stderr.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's errors (status 2) and --help (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    out = sys.stdout if out is None else out
    prefix = f"skvq {args.command}"
    try:
        with _one_line_warnings(prefix):
            return args.func(args, out)
    except (_UsageError, InvalidParameterError) as exc:
        print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (_InputError, ValueError, TypeError, OSError) as exc:
        message = _one_line(exc) or type(exc).__name__
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prefix}: error: out of memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
