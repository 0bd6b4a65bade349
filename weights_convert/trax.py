"""Import Trax ReformerLM checkpoints as canonical weights, without Trax.

Trax has written its weights in three ways, and `load_trax` reads all of them:

* `Layer.save_to_file` and trainers since June 2020: a pickled dict (gzipped
  or not) whose `flat_weights` is the list of weight arrays in depth-first
  order, with weightless layers left out.
* `training.Loop` (trax 1.4.x): `NAME.pkl.gz` contains optimizer and training
  state, and the weights go to `NAME.weights.npy.gz`, consecutive `np.save`
  records in one gzip stream. Given either file, `load_trax` reads the
  weights file.
* Trainers of spring 2020 (the checkpoints the Hugging Face converter was
  written for): a pickled dict whose `weights` is the model's nested weight
  tuple, one entry per sublayer.

NOTE: the spring-2020 layout is tested on trees built from the Hugging Face
converter's paths, not on a real 2020 file. If such a file also pickles
trainer objects (optimizer state, history), `SafeUnpickler` rejects it.

The nested tuple changed between those versions. Trax 1.4.1 wraps the
position table, the output layer and the feed-forward block in extra
`Serial` levels and has no final `LogSoftmax` entry. The spring-2020 layout
puts the feed-forward block inside the reversible half-residual's
`(Select, Parallel, Select)` combinator. `trax_template` lists both as
alternatives, and the walker checks every level's length and every array's
shape against the config, so a missing or extra block raises a
`ConversionError` naming its tree path and the shape it expected.

Hash rounds, bucket counts, chunk lengths and causality have no weights, so
they cannot be read from a checkpoint: the caller passes the config. To match
Trax numerically, set `lsh_same_bucket_only=False`, `layer_norm_eps=1e-6`,
`tie_embeddings=False` and the activation of the Trax model (`gelu_tanh` for
Trax's default `FastGelu`).

Pickles are read with `SafeUnpickler`, which builds numpy arrays and plain
containers only and rejects every other global before it is imported.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from reformer_spec.config import AttentionKind, PositionKind, ReformerConfig
from weights_convert.convert import check_canonical
from weights_convert.errors import ConversionError

GZIP_MAGIC = b"\x1f\x8b"
NPY_MAGIC = b"\x93NUMPY"

# ------------------------------------------------------------ safe unpickling


class UnsafePickleError(ConversionError):
    """A pickle refers to a global that weight checkpoints do not need."""


def _rebuild_jax_array(reconstruct: Callable, arguments: tuple, array_state: tuple, aval_state: dict) -> np.ndarray:
    """Build the numpy array behind a pickled `jax.Array`, without importing JAX.

    JAX 0.4 and later pickle an array as `_reconstruct_array(fun, args,
    arr_state, aval_state)`, where `fun(*args)` and `__setstate__(arr_state)`
    are numpy's own array reduction and `aval_state` carries only `weak_type`.
    `reconstruct` was itself resolved by `SafeUnpickler`, so it is numpy's.
    """
    array = reconstruct(*arguments)
    if not isinstance(array, np.ndarray):
        raise UnsafePickleError(f"a pickled jax.Array rebuilt into {type(array).__name__}, not a numpy array.")
    array.__setstate__(array_state)
    return array


def _encode_latin1(text: str, encoding: str = "utf-8") -> bytes:
    """Stand in for `_codecs.encode`, which protocol-2 pickles use to store bytes as latin-1 text.

    Only latin-1 is accepted: another encoding name would make `codecs` look up
    and import a codec module, which a weight file has no reason to ask for.
    """
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"the pickle calls _codecs.encode with encoding {encoding!r}; only latin-1 is allowed.")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numeric = np._core.numeric if hasattr(np, "_core") else np.core.numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _encode_latin1,
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("jax._src.array", "_reconstruct_array"): _rebuild_jax_array,
    }
    # numpy 2 renamed numpy.core to numpy._core; pickles name either one.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays, dtypes, scalars and plain containers only.

    `find_class` is the only way a pickle reaches code, so rejecting every
    other (module, name) there, before anything is imported, means that
    loading runs no code from the file. Built-in dicts, lists, tuples,
    strings and numbers need no global and always load.
    """

    ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle refers to {module}.{name}, which a Trax weight checkpoint does not need; "
                "it was neither imported nor called. Only numpy arrays, dtypes, scalars and plain containers "
                "are allowed. If the file comes from a source you trust, load it with Trax and save its "
                "weights with `Layer.save_to_file(path, weights_only=True)`."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"the pickle uses a persistent id ({pid!r}), which a Trax weight checkpoint does not need.")


def safe_unpickle(handle: BinaryIO) -> Any:
    return SafeUnpickler(handle).load()


# ----------------------------------------------------------------- reading


def _open(path: Path) -> BinaryIO:
    """Open `path` for reading, through gzip when the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        compressed = handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


class _Lookahead:
    """A read-only stream with a one-byte look-ahead, so the end of an `np.save` sequence can be found.

    It deliberately is not an `io` file object: numpy then reads it with
    plain `read` calls instead of reading the file descriptor underneath,
    which would bypass gzip.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pending = b""

    def at_end(self) -> bool:
        if not self.pending:
            self.pending = self.raw.read(1)
        return not self.pending

    def read(self, size: int = -1) -> bytes:
        head, self.pending = self.pending, b""
        if size < 0:
            return head + self.raw.read()
        if size <= len(head):
            self.pending = head[size:]
            return head[:size]
        return head + self.raw.read(size - len(head))


def read_npy_stream(path: str | os.PathLike) -> list[np.ndarray]:
    """Read consecutive `np.save` records, as `trax.layers.np_to_file` writes them (object arrays rejected)."""
    arrays = []
    with _open(Path(path)) as raw:
        stream = _Lookahead(raw)
        while not stream.at_end():
            arrays.append(np.lib.format.read_array(stream, allow_pickle=False))
    return arrays


def _loop_weights_file(path: Path) -> Path | None:
    """Return the weights file that `training.Loop` writes beside `NAME.pkl.gz`, or None if there is none."""
    if path.name.endswith(".pkl.gz"):
        sibling = path.with_name(path.name[: -len(".pkl.gz")] + ".weights.npy.gz")
        if sibling.exists():
            return sibling
    return None


def _unpickle_checkpoint(path: Path) -> Any:
    with _open(path) as handle:
        try:
            return safe_unpickle(handle)
        except UnsafePickleError as error:
            raise UnsafePickleError(f"{path}: {error}") from None
        except (pickle.UnpicklingError, EOFError) as error:
            raise ConversionError(f"{path} is not a Trax checkpoint: unpickling failed ({error}).") from None


def read_trax_checkpoint(path: str | os.PathLike) -> list[np.ndarray] | tuple:
    """Return the weights stored in a Trax checkpoint: a flat list of arrays, or the nested tuple.

    `path` is a pickle (gzipped or not) or an `np.save` stream such as a
    `training.Loop` weights file. A Loop pickle (`NAME.pkl.gz`) keeps the
    weights in `NAME.weights.npy.gz` and contains JAX and Trax objects that
    `SafeUnpickler` rejects. When that rejection happens and the weights file
    exists, the weights file is read instead.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Trax checkpoint {str(path)!r} not found.")
    with _open(path) as handle:
        start = handle.read(len(NPY_MAGIC))
    if start == NPY_MAGIC:
        return read_npy_stream(path)

    weights_file = _loop_weights_file(path)
    try:
        content = _unpickle_checkpoint(path)
    except UnsafePickleError:
        if weights_file is None:
            raise
        return read_npy_stream(weights_file)
    if not isinstance(content, dict):
        raise ConversionError(
            f"{path} contains a pickled {type(content).__name__}, but a Trax checkpoint is a dict with "
            "'flat_weights' or 'weights'."
        )
    if "flat_weights" in content:
        flat = content["flat_weights"]
        if isinstance(flat, int):  # Loop checkpoints store the gzip level here and the weights beside
            if weights_file is None:
                raise ConversionError(
                    f"{path} keeps its weights in a separate NAME.weights.npy.gz file (a training.Loop "
                    "checkpoint), which was not found beside it; pass the weights file instead."
                )
            return read_npy_stream(weights_file)
        return list(flat)
    if "weights" in content:
        return content["weights"]
    raise ConversionError(
        f"{path} has no 'flat_weights' or 'weights' entry (its keys are {sorted(map(str, content))}); "
        "it is not a Trax weight checkpoint."
    )


# ----------------------------------------------------------- the template


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One weight array: the canonical tensor it becomes, the shapes Trax may store it in, and the mapping."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    to_canonical: Callable[[np.ndarray], np.ndarray] = np.asarray


@dataclasses.dataclass(frozen=True)
class Group:
    """A tuple of sublayer weights with exactly these entries."""

    label: str
    children: tuple
    hint: str = ""  # appended to a wrong-length error, to say which config field to check


@dataclasses.dataclass(frozen=True)
class OneOf:
    """Alternative layouts of one subtree (for example from different Trax versions)."""

    label: str
    alternatives: tuple[tuple[str, Any], ...]  # (layout name, template)


class _Weightless:
    """A weightless layer: an empty tuple, or nested tuples that hold no array."""

    def __repr__(self) -> str:
        return "()"


WEIGHTLESS = _Weightless()


def _leaf(name: str, *shapes: tuple[int, ...], to_canonical: Callable = np.asarray) -> Leaf:
    return Leaf(name, tuple(tuple(shape) for shape in shapes), to_canonical)


def _norm(prefix: str, width: int) -> Group:
    return Group(f"{prefix} layer norm", (_leaf(f"{prefix}.scale", (width,)), _leaf(f"{prefix}.bias", (width,))))


def _heads_first_to_canonical(array: np.ndarray) -> np.ndarray:
    """Trax's per-head input projection (H, D, K) -> canonical (D, H, K)."""
    return np.ascontiguousarray(np.transpose(array, (1, 0, 2)))


def _attention(prefix: str, kind: AttentionKind, config: ReformerConfig) -> Group:
    D, H, K = config.d_model, config.n_heads, config.d_head
    names = ("query_key", "value") if kind is AttentionKind.LSH else ("query", "key", "value")
    projections = tuple(
        _leaf(f"{prefix}.{name}.kernel", (H, D, K), to_canonical=_heads_first_to_canonical) for name in names
    )
    # The output projection (H, K, D) already has the canonical layout.
    output = _leaf(f"{prefix}.output.kernel", (H, K, D))
    trax_class = "LSHSelfAttention (w_q, w_v, w_o)" if kind is AttentionKind.LSH else "SelfAttention (w_q, w_k, w_v, w_o)"
    index = prefix.split(".")[1]
    hint = (
        f" Trax's LSHSelfAttention has 3 arrays and SelfAttention 4, so check attention_layers[{index}]="
        f"{kind.value!r}, and that the Trax layer was built with bias=False."
    )
    return Group(f"{prefix} {trax_class}", projections + (output,), hint)


def _dense(prefix: str, inputs: int, outputs: int) -> Group:
    return Group(prefix, (_leaf(f"{prefix}.kernel", (inputs, outputs)), _leaf(f"{prefix}.bias", (outputs,))))


def _feed_forward(prefix: str, config: ReformerConfig) -> Group:
    """Build the block LayerNorm, Dense, Dropout, activation, Dense, Dropout."""
    D, F = config.d_model, config.d_ff
    norm = _norm(f"{prefix}.norm", D)
    dense_in, dense_out = _dense(f"{prefix}.dense_in", D, F), _dense(f"{prefix}.dense_out", F, D)
    return Group(f"{prefix} block", (norm, dense_in, WEIGHTLESS, WEIGHTLESS, dense_out, WEIGHTLESS))


def _feed_forward_half(prefix: str, config: ReformerConfig) -> OneOf:
    block = _feed_forward(prefix, config)
    label = f"{prefix} half-residual"

    # Trax 1.4.1 with ff_chunk_size > 0:
    # Serial(BatchLeadingAxes(Serial(ReshapeToChunks, Scan(block), ReshapeFromChunks))).
    scan = Group("Serial(ReshapeToChunks, Scan, ReshapeFromChunks)", (WEIGHTLESS, Group("Scan", (block,)), WEIGHTLESS))
    chunked = Group(f"{prefix} chunked", (Group("BatchLeadingAxes", (scan,)),))

    # Spring 2020: ReversibleHalfResidual = (Serial(Select, Parallel((), (), block), Select), Add).
    # A chunked block sat inside (Dup, reshape, Scan, reshape).
    def spring_2020(inner: Group) -> Group:
        parallel = Group("Parallel", (WEIGHTLESS, WEIGHTLESS, inner))
        return Group(f"{label} (2020)", (Group("Serial(Select, Parallel, Select)", (WEIGHTLESS, parallel, WEIGHTLESS)), WEIGHTLESS))

    old_chunked = Group(f"{prefix} chunked (2020)", (WEIGHTLESS, WEIGHTLESS, block, WEIGHTLESS))
    return OneOf(
        label,
        (
            ("trax 1.4.1", Group(label, (block,))),
            ("trax 1.4.1, ff_chunk_size > 0", Group(label, (chunked,))),
            ("2020", spring_2020(block)),
            ("2020, chunked", spring_2020(old_chunked)),
        ),
    )


def _layer(index: int, kind: AttentionKind, config: ReformerConfig) -> tuple:
    """Build the four ReversibleSerial entries of one decoder layer."""
    prefix = f"layers.{index}"
    norm = Group("Serial(LayerNorm)", (_norm(f"{prefix}.attention.norm", config.d_model),))
    attention_half = Group(f"{prefix} attention half-residual", (norm, _attention(f"{prefix}.attention", kind, config)))
    return (attention_half, WEIGHTLESS, _feed_forward_half(f"{prefix}.feed_forward", config), WEIGHTLESS)


def _positions(config: ReformerConfig) -> OneOf:
    if config.positions is PositionKind.AXIAL:
        leaves = []
        rank = len(config.axial_shape)
        for axis, (size, width) in enumerate(zip(config.axial_shape, config.axial_dims)):
            # Trax stores axis i as (1, 1, .., s_i, .., 1, d_i): a batch axis, then one slot per axis.
            trax_shape = [1] * (rank + 2)
            trax_shape[axis + 1], trax_shape[-1] = size, width
            reshape = lambda array, shape=(size, width): array.reshape(shape)  # noqa: E731
            leaves.append(_leaf(f"embeddings.axial_{axis}", tuple(trax_shape), to_canonical=reshape))
        inner: Any = Group("AxialPositionalEncoding", tuple(leaves))
    else:
        L, D = config.max_length, config.d_model
        # Checkpoints before mid-2020 stored the table with a leading batch axis.
        inner = _leaf("embeddings.position_table", (L, D), (1, L, D), to_canonical=lambda a: a.reshape(L, D))
    return OneOf(
        "positional encoding",
        (("trax 1.4.1", Group("Serial(positional encoding)", (WEIGHTLESS, inner, WEIGHTLESS))), ("2020", inner)),
    )


def trax_template(config: ReformerConfig) -> OneOf:
    """Build the expected weight tree of a Trax ReformerLM made like `config`, in the 1.4.1 and 2020 layouts."""
    if config.tie_embeddings:
        raise ValueError(
            "tie_embeddings=True, but Trax's ReformerLM has an output matrix of its own; set tie_embeddings=False."
        )
    D, V = config.d_model, config.vocab_size
    layers: tuple = ()
    for index, kind in enumerate(config.attention_layers):
        layers += _layer(index, kind, config)
    embedding = _leaf("embeddings.token.embedding", (V, D))
    stack = Group(f"ReversibleSerial ({config.n_layers} layers x 4 entries)", layers)
    final_norm = _norm("final_norm", 2 * D)
    dense = _dense("lm_head", 2 * D, V)
    positions = _positions(config)
    # ShiftRight, Embedding, Dropout, positions, Dup, ReversibleSerial, Concatenate, LayerNorm, Dropout, Dense.
    recent = Group(
        "ReformerLM (trax 1.4.1)",
        (WEIGHTLESS, embedding, WEIGHTLESS, positions, WEIGHTLESS, stack, WEIGHTLESS, final_norm, WEIGHTLESS,
         Group("Serial(Dense)", (WEIGHTLESS, dense, WEIGHTLESS))),
    )
    # Before November 2020 the model ended in LogSoftmax, an eleventh, weightless entry.
    spring_2020 = Group(
        "ReformerLM (2020, ending in LogSoftmax)",
        (WEIGHTLESS, embedding, WEIGHTLESS, positions, WEIGHTLESS, stack, WEIGHTLESS, final_norm, WEIGHTLESS, dense,
         WEIGHTLESS),
    )
    return OneOf("ReformerLM", (("trax 1.4.1", recent), ("2020", spring_2020)))


# -------------------------------------------------------------- the walker


class TraxStructureError(ConversionError):
    """A Trax weight tree that does not fit the config at `path`, the tree path of the mismatch."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'weights'}: {message}")
        self.path = path
        self.message = message


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def _array_shapes(node: Any) -> list[tuple[int, ...]]:
    if _is_array(node):
        return [tuple(node.shape)]
    if isinstance(node, (tuple, list)):
        return [shape for item in node for shape in _array_shapes(item)]
    if isinstance(node, dict):
        return [shape for item in node.values() for shape in _array_shapes(item)]
    return []


def _expected(template: Any) -> str:
    """Describe what a template expects, for error messages: its arrays' names and shapes."""
    if template is WEIGHTLESS:
        return "a weightless entry ()"
    if isinstance(template, Leaf):
        return f"{template.name} of shape {' or '.join(map(str, template.shapes))}"
    leaves = _template_leaves(template)
    if not leaves:
        return f"{_label(template)} (weightless)"
    return f"{_label(template)} with " + ", ".join(f"{leaf.name} {leaf.shapes[0]}" for _, leaf in leaves)


def _label(template: Any) -> str:
    return getattr(template, "label", repr(template))


def _template_leaves(template: Any, path: str = "") -> list[tuple[str, Leaf]]:
    """List the arrays a template expects, with their tree paths, in Trax's depth-first flattening order.

    All alternatives of a OneOf hold the same arrays in the same order, so
    the first (the trax 1.4.1 layout) stands for all of them.
    """
    if isinstance(template, Leaf):
        return [(path, template)]
    if isinstance(template, Group):
        return [item for i, child in enumerate(template.children) for item in _template_leaves(child, f"{path}[{i}]")]
    if isinstance(template, OneOf):
        return _template_leaves(template.alternatives[0][1], path)
    return []


def _match(template: Any, node: Any, path: str, out: dict[str, np.ndarray]) -> None:
    if template is WEIGHTLESS:
        shapes = _array_shapes(node)
        if shapes:
            raise TraxStructureError(path, f"expected a weightless entry, found an extra block with arrays of shapes {shapes}.")
        return

    if isinstance(template, Leaf):
        if not _is_array(node):
            raise TraxStructureError(
                path, f"expected {_expected(template)}, found {type(node).__name__} holding shapes {_array_shapes(node)}."
            )
        array = np.asarray(node)
        if tuple(array.shape) not in template.shapes:
            raise TraxStructureError(path, f"{template.name} has shape {tuple(array.shape)}; expected {' or '.join(map(str, template.shapes))}.")
        out[template.name] = template.to_canonical(array)
        return

    if isinstance(template, Group):
        if not isinstance(node, (tuple, list)):
            raise TraxStructureError(path, f"expected {_expected(template)}, found {type(node).__name__}.")
        expected, found = len(template.children), len(node)
        if found < expected:
            missing = template.children[found]
            raise TraxStructureError(
                f"{path}[{found}]",
                f"missing block: {_label(template)} has {found} entries but needs {expected}; "
                f"entry {found} should be {_expected(missing)}.{template.hint}",
            )
        if found > expected:
            raise TraxStructureError(
                f"{path}[{expected}]",
                f"extra block: {_label(template)} should have {expected} entries but has {found}; "
                f"entry {expected} contains arrays of shapes {_array_shapes(node[expected])}.{template.hint}",
            )
        for i, (child, item) in enumerate(zip(template.children, node)):
            _match(child, item, f"{path}[{i}]", out)
        return

    if isinstance(template, OneOf):
        failures: list[tuple[str, TraxStructureError]] = []
        for layout, alternative in template.alternatives:
            attempt: dict[str, np.ndarray] = {}
            try:
                _match(alternative, node, path, attempt)
            except TraxStructureError as error:
                failures.append((layout, error))
                continue
            out.update(attempt)
            return
        # Report the alternative that matched deepest: its error is the real one.
        layout, deepest = max(failures, key=lambda item: len(item[1].path))
        note = "" if "(closest layout" in deepest.message else f" (closest layout: {layout})"
        raise TraxStructureError(deepest.path, deepest.message + note)

    raise AssertionError(f"unknown template node {template!r}")


def _match_flat(template: Any, flat: Sequence[Any], out: dict[str, np.ndarray]) -> None:
    """Assign a flat weight list (Trax's depth-first order) to the template's arrays, checking count and shapes."""
    leaves = _template_leaves(template)
    for index, (path, leaf) in enumerate(leaves):
        if index >= len(flat):
            raise TraxStructureError(
                f"flat_weights[{index}]",
                f"missing block: the checkpoint has {len(flat)} arrays but the config needs {len(leaves)}; "
                f"array {index} should be {leaf.name} of shape {leaf.shapes[0]} (tree path weights{path}).",
            )
        _match(leaf, flat[index], f"flat_weights[{index}] (tree path weights{path})", out)
    if len(flat) > len(leaves):
        raise TraxStructureError(
            f"flat_weights[{len(leaves)}]",
            f"extra block: the checkpoint has {len(flat)} arrays but the config needs {len(leaves)}; "
            f"the first extra one has shape {tuple(np.shape(flat[len(leaves)]))}.",
        )


def trax_weights_to_canonical(weights: Any, config: ReformerConfig) -> dict[str, np.ndarray]:
    """Convert Trax ReformerLM weights (a flat list or the nested tuple, numpy or JAX arrays) to canonical tensors.

    A list whose every item is an array is read as Trax's flat weight list.
    Anything else is walked as the nested tree, in the 1.4.1 or the 2020 layout.
    """
    template = trax_template(config)
    canonical: dict[str, np.ndarray] = {}
    if isinstance(weights, list) and all(_is_array(item) for item in weights):
        _match_flat(template, weights, canonical)
    else:
        _match(template, weights, "", canonical)
    ordered = {name: canonical[name] for name in _canonical_order(config) if name in canonical}
    check_canonical(config, ordered, "Trax weights")
    return ordered


def _canonical_order(config: ReformerConfig) -> list[str]:
    from reformer_spec.parameters import parameter_table

    return [spec.name for spec in parameter_table(config)]


def load_trax(path: str | os.PathLike, config: ReformerConfig) -> dict[str, np.ndarray]:
    """Read a Trax ReformerLM checkpoint into canonical weights for a model built from `config`.

    `config` must describe the Trax model: layer kinds in order, sizes, bucket
    factors and positions (see the module docstring for the settings that
    make our models compute what Trax computes). Raises `ConversionError`
    naming the tree path and expected shape when the checkpoint does not fit
    `config`, and `UnsafePickleError` when its pickle refers to anything but
    numpy arrays and plain containers.
    """
    return trax_weights_to_canonical(read_trax_checkpoint(path), config)


# ----------------------------------------------------------- hashing state


def trax_rotations_to_canonical(rotations: np.ndarray, n_heads: int) -> np.ndarray:
    """Trax's per-(example, head) rotations (H*B, K, R, Z) -> our shared (H, K, R, Z).

    Trax draws one (K, R, Z) rotation per example and head and indexes them
    `example * H + head`. Our models share one rotation tensor across the
    batch, so only batch size 1 maps exactly.
    """
    rotations = np.asarray(rotations)
    if rotations.ndim != 4 or rotations.shape[0] % n_heads != 0:
        raise ValueError(f"rotations have shape {rotations.shape}; expected (H*B, K, R, Z) with H={n_heads}.")
    batch = rotations.shape[0] // n_heads
    if batch != 1:
        raise ValueError(
            f"rotations hold {batch} examples; our models share one rotation tensor across the batch, so "
            "only Trax rotations drawn for batch size 1 map onto them. Build the Trax model with batch size 1."
        )
    return rotations  # (H, K, R, Z), because with one example the index example * H + head is the head


def trax_buckets_to_canonical(buckets: np.ndarray, n_heads: int, n_hashes: int, n_buckets: int) -> np.ndarray:
    """Trax's stored buckets (H*B, R*L), offset by round * n_buckets -> our (B, H, R, L) without offsets."""
    buckets = np.asarray(buckets)
    rows, slots = buckets.shape
    batch, length = rows // n_heads, slots // n_hashes
    per_round = buckets.reshape(batch, n_heads, n_hashes, length)  # row index is example * H + head
    offsets = (np.arange(n_hashes) * n_buckets)[None, None, :, None]  # (1, 1, R, 1)
    return per_round - offsets


__all__ = [
    "SafeUnpickler",
    "TraxStructureError",
    "UnsafePickleError",
    "load_trax",
    "read_npy_stream",
    "read_trax_checkpoint",
    "safe_unpickle",
    "trax_buckets_to_canonical",
    "trax_rotations_to_canonical",
    "trax_template",
    "trax_weights_to_canonical",
]
