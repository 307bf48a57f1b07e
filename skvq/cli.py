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
"""

import argparse
import ast
import sys
import time
import warnings

import numpy as np
from sklearn.base import clone

from ._registry import (NEURAL, QUANTIZERS, available_quantizers, class_name,
                        make_quantizer)


def _load_array(path):
    X = np.load(path, allow_pickle=False)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    elif X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    return X


def _parse_params(pairs):
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"skvq: --param takes NAME=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def _describe_codebook(q):
    """A short description of a fitted quantizer's codebook for the tables."""
    if hasattr(q, "n_values_"):
        return f"{q.n_values_} values"
    if hasattr(q, "n_subspaces"):
        return f"{q.n_subspaces} x {2**q.n_bits}"
    return f"{q.bits_per_sample_:g} bits"


def _cmd_list(args, out):
    available = set(available_quantizers())
    for name, (cls, preset, description, _) in QUANTIZERS.items():
        flag = "" if name in available else "  [not installed]"
        print(f"{name:12s} {class_name(cls)}{preset or ''}: {description}{flag}", file=out)
    return 0


def _cmd_compare(args, out):
    if args.data:
        X = _load_array(args.data).astype(np.float64)
        source = args.data
    else:
        from sklearn.datasets import load_digits

        X = load_digits().data
        source = "scikit-learn digits (1797 x 64, values 0-16)"
    names = (args.methods.split(",") if args.methods
             else available_quantizers(include_neural=False))
    missing = sorted(set(QUANTIZERS) - set(available_quantizers()))
    if not args.methods and missing:
        print(f"not installed, skipped: {', '.join(missing)} (see `skvq list`)",
              file=sys.stderr)
    if not args.methods:
        print(f"neural quantizers run only when named: --methods {','.join(NEURAL)}",
              file=sys.stderr)
    print(f"Data: {source}; {X.shape[0]} x {X.shape[1]}, {np.unique(X).size} distinct values; "
          f"n_values={args.n_values}, weighting={args.weighting}", file=out)
    rows = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", end=" ", file=sys.stderr, flush=True)
        params = {"n_values": args.n_values, "weighting": args.weighting,
                  "random_state": args.random_state}
        # Vector quantizers at the scalar quantizers' rate, D * log2(n_values) bits a row.
        rate = X.shape[1] * np.log2(args.n_values)
        if name in ("pq", "opq"):
            params["n_subspaces"] = int(np.clip(round(rate / 8), 1, X.shape[1]))
        elif name == "deepvq":
            params["n_bits"] = max(1, int(round(rate)))
        elif name in ("scq", "vq-vae"):  # n_latents codes of log2(codebook_size) bits
            params["n_latents"] = max(1, int(round(rate / 6)))
            params["codebook_size"] = 64
        q = make_quantizer(name, **params)
        if (name != "deepvq" and "n_bits" in q.get_params()
                and X.shape[0] < 2**q.n_bits):  # a codebook of 2**n_bits vectors
            q.set_params(n_bits=int(np.log2(X.shape[0])))
        # Warm-up on a few rows so that timings exclude numba's one-off JIT/cache load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                clone(q).fit(X[:2])
            except ValueError:  # too few rows for this quantizer: no warm-up needed
                pass
        start = time.perf_counter()
        try:
            q.fit(X)
        except ValueError as exc:
            print(f"skipped: {exc}", file=sys.stderr, flush=True)
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
    return 0


def _cmd_quantize(args, out):
    import joblib

    X = _load_array(args.input)
    q = make_quantizer(args.method, **_parse_params(args.param))
    codes = q.fit_transform(X)
    np.save(args.codes, codes)
    joblib.dump(q, args.model)
    mse = float(np.mean((X - q.inverse_transform(codes)) ** 2))
    print(f"{type(q).__name__}: {_describe_codebook(q)}, {q.bits_per_sample_:.1f} bits/sample, "
          f"MSE {mse:.6g}; codes {codes.shape} {codes.dtype} -> {args.codes}, "
          f"model -> {args.model}", file=out)
    return 0


def _cmd_reconstruct(args, out):
    import joblib

    q = joblib.load(args.model)
    codes = np.load(args.codes, allow_pickle=False)
    X_rec = q.inverse_transform(codes)
    np.save(args.out, X_rec)
    print(f"reconstruction {X_rec.shape} {X_rec.dtype} -> {args.out}", file=out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="skvq", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compare", help="compare every available quantizer on real data")
    p.add_argument("--data", help=".npy file (2-D; 1-D is one row); default: sklearn digits")
    p.add_argument("--n-values", type=int, default=4, help="codebook size (default 4)")
    p.add_argument("--weighting", choices=["unique", "count"], default="count",
                   help="weight values by multiplicity (default: the table reports the MSE of "
                        "the whole array, which this minimises) or count each distinct value "
                        "once (the paper's choice and the estimators' default)")
    p.add_argument("--methods", help="comma-separated names (default: every available "
                                      "classical quantizer; name the neural ones to run them)")
    p.add_argument("--random-state", type=int, default=0)
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
    p.add_argument("--model", required=True, help="fitted model written by `skvq quantize`")
    p.add_argument("--out", required=True, help="output .npy for the reconstruction")
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("list", help="list the quantizers")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv=None, out=None):
    """Entry point of the ``skvq`` console script."""
    args = build_parser().parse_args(argv)
    out = sys.stdout if out is None else out
    try:
        return args.func(args, out)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"skvq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
