"""A Keras functional model as a small JSON description the web pages' JavaScript network runs.

`describe(model)` walks the model's layer graph (from `model.get_config()`, so any preset, latent
size, image shape or width works) and lists it as operations a page can evaluate with `static/nn.js`:
dense, 2-D convolution and transposed convolution (any stride, same or valid padding, aligned as
Keras aligns them: see `conv2d`/`conv2d_transpose` in nn.js), cropping, max-pooling, nearest
upsampling, flatten and reshape, and the activations below. vaelab's fused layers are listed as the
stock pairs they compute (`ConvMaxPool2D` as convolution + pooling, `UpSamplingConv2D` as upsampling +
convolution): the same mathematics with the same weights (layers.py). The description:

    {"format": 1, "name": "generator",
     "inputs": ["decoder_input:0:0"], "input_shapes": [[2]], "classes": null,
     "outputs": ["decoder_image:0:0"], "output_shapes": [[28, 28, 1]],
     "ops": [{"op": "dense", "input": "decoder_input:0:0", "output": "decoder_h:0:0",
              "activation": "relu", "kernel": 0, "bias": 1}, ...],
     "weights": {"dtype": "float32", "shapes": [[2, 256], [256], ...], "data": "<base64>"}}

Tensors are named `layer:node:index` as in the Keras configuration; "kernel"/"bias" index the
weight list; "data" holds every weight array, row-major (C order), little-endian, one after the other.
As "int8", each array k is stored as round(w / scale_k), scale_k = max |w| / 127 (1 for an array of zeros), with
"scales": [scale_0, ...] beside "data": a quarter of float32's bytes, each weight within scale_k / 2 of its
value (`page_weights` gives the arrays the page computes with).
Shapes leave out the batch axis; images are (height, width, channels).

A conditional model (a cvae: a second input, the one-hot label, concatenated to the features that Dense
layers read) is described with "classes": C and its first input alone: each Dense that reads the label
gets the kernel's feature rows as "kernel" and a (C, units) "class_bias" table, bias + the kernel's
label rows (one-hot times kernel picks a row), of which the page adds row c for class c. A vqvae's
generator reads code indices: its codebook lookup is an "embedding" op ("table": the (K, D) codebook).
Unconditional models have "classes": null.

A generator whose output is more than the image's pixels, `logistic-black`'s (the channels' locations, then pi's
logit: `vaelab.models.likelihoods.image`), is described with `likelihood="logistic-black"`: a last op
{"op": "black_mass_mean", "input": <the decoder's output>, "output": "image"} turns each pixel into the image shown,
sigmoid(logit) times the locations clipped to [0, 1], and "outputs"/"output_shapes" name that image.
"""

from __future__ import annotations

import base64
import graphlib
from typing import Any

import numpy as np

from vaelab.errors import VaelabError

FORMAT = 1
DTYPES = ("float32", "float16", "int8")  # the weights' storage in the page, largest first
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softplus")  # those nn.js implements
IDENTITY_LAYERS = ("InputLayer", "Binarize", "Dropout", "GaussianNoise")  # the identity at inference
SUPPORTED = (
    "Dense, Conv2D, Conv2DTranspose, Cropping2D, MaxPooling2D, UpSampling2D, Flatten, Reshape, Activation, "
    "ConvMaxPool2D, UpSamplingConv2D, SameConv2D, HalvingConv2D, DoublingConv2DTranspose, FixedLogVariance, "
    "a label concatenated before Dense layers, a vqvae's codebook lookup"
)


def weight_count(model) -> int:
    """How many numbers the description of `model` embeds (its weights)."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def describe(model, *, dtype: str = "float32", likelihood: str | None = None) -> dict[str, Any]:
    """The JSON-ready description of a functional Keras `model`, weights stored as `dtype`; a generator trained with
    `likelihood` "logistic-black" ends with the op that shows its image (the module's docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    config = model.get_config()
    inputs = [_history_name(h) for h in _as_list(config["input_layers"])]
    if len(inputs) > 2:
        raise VaelabError(f"the page cannot run the {model.name}: {len(inputs)} inputs (at most 2: x or z, label)")
    label = inputs[1] if len(inputs) == 2 else None
    classes = int(model.inputs[1].shape[-1]) if label else None
    weights: list[np.ndarray] = []
    ops: list[dict[str, Any]] = []
    conditioned: set[str] = set()  # tensors that are [features, label]: only a Dense may read them
    for layer_config in _topological(config["layers"]):
        layer = model.get_layer(layer_config["name"])
        for node_index, node in enumerate(layer_config["inbound_nodes"]):
            sources = _node_inputs(node)
            out = f"{layer.name}:{node_index}:0"
            if out == label:
                continue
            if label and label in sources:
                ops.append(_condition(layer, sources, label, out, model))
                conditioned.add(out)
            elif len(sources) != 1:
                raise _unsupported(layer, model, "more than one input")
            elif sources[0] in conditioned:
                ops.append(_conditioned_dense(layer, layer_config["config"], sources[0], out, weights, model, classes))
            else:
                ops += _ops(layer, layer_config["config"], sources[0], out, weights, model, node.get("kwargs", {}))
    scales = [_int8_scale(w) for w in weights] if dtype == "int8" else None
    if scales is None:
        data = b"".join(np.ascontiguousarray(w, dtype="<" + np.dtype(dtype).str[1:]).tobytes() for w in weights)
    else:
        data = b"".join(_quantised(w, scale).tobytes() for w, scale in zip(weights, scales, strict=True))
    stored = {"dtype": dtype, "shapes": [list(w.shape) for w in weights]}
    if scales is not None:
        stored["scales"] = scales
    outputs = [_history_name(h) for h in _as_list(config["output_layers"])]
    output_shapes = [list(t.shape[1:]) for t in model.outputs]
    if likelihood == "logistic-black":
        ops.append({"op": "black_mass_mean", "input": outputs[0], "output": "image"})
        outputs, output_shapes = ["image"], [[*output_shapes[0][:-1], output_shapes[0][-1] - 1]]
    return {
        "format": FORMAT,
        "name": model.name,
        "inputs": inputs[:1],
        "input_shapes": [list(model.inputs[0].shape[1:])],
        "classes": classes,
        "outputs": outputs,
        "output_shapes": output_shapes,
        "ops": ops,
        "weights": {**stored, "data": base64.b64encode(data).decode("ascii")},
    }


def page_weights(description: dict[str, Any]) -> list[np.ndarray]:
    """The weight arrays of a description as the page's network computes with them (nn.js `decodeWeights`): float32,
    from the stored float32, float16 or int8 (each int8 times its array's scale, rounded to float32)."""
    stored = description["weights"]
    raw = base64.b64decode(stored["data"])
    flat = np.frombuffer(raw, dtype="<" + np.dtype(stored["dtype"]).str[1:])
    arrays, offset = [], 0
    for k, shape in enumerate(stored["shapes"]):
        size = int(np.prod(shape))
        values = flat[offset : offset + size].astype(np.float64)
        if stored["dtype"] == "int8":
            values = values * stored["scales"][k]
        arrays.append(values.astype(np.float32).reshape(shape))
        offset += size
    return arrays


def _int8_scale(w: np.ndarray) -> float:
    """The step of array `w` stored as int8: its largest magnitude over 127 (1 for zeros), a float32 number."""
    largest = float(np.max(np.abs(w))) if w.size else 0.0
    return float(np.float32(largest / 127.0)) if largest > 0 else 1.0


def _quantised(w: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(w, np.float64) / scale), -127, 127).astype(np.int8)


def _condition(layer, sources: list[str], label: str, out: str, model) -> dict[str, Any]:
    """The label concatenated after the features: the features pass on, the Dense layers reading them add the
    label's rows as a class bias (`_conditioned_dense`)."""
    if type(layer).__name__ != "Concatenate" or len(sources) != 2 or sources[1] != label:
        raise _unsupported(layer, model, "the label read other than concatenated after the features")
    return {"op": "identity", "input": sources[0], "output": out}


def _conditioned_dense(
    layer, cfg: dict, source: str, out: str, weights: list[np.ndarray], model, classes: int
) -> dict[str, Any]:
    """A Dense reading [features, one-hot label]: the features' kernel rows, and per class its bias plus the
    label's row of the kernel, (classes, units)."""
    if type(layer).__name__ != "Dense":
        raise _unsupported(layer, model, "the label read by a layer other than Dense")
    values = layer.get_weights()
    kernel, rows = values[0], values[0].shape[0] - classes
    class_bias = kernel[rows:] + (values[1] if layer.use_bias else 0.0)
    params = {"activation": _activation(layer, cfg, model), "kernel": len(weights), "class_bias": len(weights) + 1}
    weights += [kernel[:rows], class_bias]
    return {"op": "dense", "input": source, "output": out, **params}


def _ops(
    layer, cfg: dict, source: str, out: str, weights: list[np.ndarray], model, kwargs: dict
) -> list[dict[str, Any]]:
    kind = type(layer).__name__
    if kind == "VectorQuantizer" and kwargs.get("lookup"):  # a vqvae's codebook, read by index
        weights.append(np.asarray(layer.codebook))
        return [{"op": "embedding", "input": source, "output": out, "table": len(weights) - 1}]
    if kind in IDENTITY_LAYERS:
        return [{"op": "identity", "input": source, "output": out}]
    if kind == "FixedLogVariance":
        return [{"op": "zeros", "input": source, "output": out}]
    if kind in ("Flatten", "Reshape"):
        target = [-1] if kind == "Flatten" else list(cfg["target_shape"])
        return [{"op": "reshape", "input": source, "output": out, "shape": target}]
    if kind == "Activation":
        return [{"op": "activation", "input": source, "output": out, "activation": _activation(layer, cfg, model)}]
    if kind == "Dense":
        return [{"op": "dense", "input": source, "output": out, **_params(layer, cfg, weights, model)}]
    if kind == "MaxPooling2D":
        _check_channels_last(layer, cfg, model)
        pool = list(cfg["pool_size"])
        strides = list(cfg["strides"] or pool)
        return [{"op": "maxpool2d", "input": source, "output": out, "pool": pool, "strides": strides,
                 "padding": cfg["padding"]}]  # fmt: skip
    if kind == "UpSampling2D":
        _check_channels_last(layer, cfg, model)
        if cfg.get("interpolation", "nearest") != "nearest":
            raise _unsupported(layer, model, f"interpolation {cfg['interpolation']!r} (only nearest)")
        return [{"op": "upsample2d", "input": source, "output": out, "size": list(cfg["size"])}]
    if kind in ("Conv2D", "SameConv2D", "HalvingConv2D"):  # a 3x3 "same" Conv2D, stride 1 or 2 (layers.py)
        return [_conv(layer, cfg, source, out, weights, model)]
    if kind in ("Conv2DTranspose", "DoublingConv2DTranspose"):
        return [_conv(layer, cfg, source, out, weights, model, transpose=True)]
    if kind == "Cropping2D":
        _check_channels_last(layer, cfg, model)
        (top, bottom), (left, right) = layer.cropping
        return [{"op": "crop2d", "input": source, "output": out, "cropping": [[top, bottom], [left, right]]}]
    if kind == "ConvMaxPool2D":  # relu(conv) then 2x2 max-pooling (layers.py)
        conv = _conv(layer, cfg, source, f"{out}/conv", weights, model)
        pool = {"op": "maxpool2d", "input": conv["output"], "output": out, "pool": [2, 2], "strides": [2, 2],
                "padding": "valid"}  # fmt: skip
        return [conv, pool]
    if kind == "UpSamplingConv2D":  # 2x nearest upsampling then the convolution (layers.py)
        up = {"op": "upsample2d", "input": source, "output": f"{out}/up", "size": [2, 2]}
        return [up, _conv(layer, cfg, up["output"], out, weights, model)]
    raise _unsupported(layer, model, "no JavaScript implementation")


def _conv(
    layer, cfg: dict, source: str, out: str, weights: list[np.ndarray], model, *, transpose: bool = False
) -> dict[str, Any]:
    """A convolution, or with `transpose` a transposed one (its kernel is (kh, kw, filters, channels in))."""
    # The layer's own attributes, not its configuration: the fused layers leave fixed settings out of theirs.
    _check_channels_last(layer, {"data_format": layer.data_format}, model)
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        raise _unsupported(layer, model, "dilation or groups other than 1")
    if transpose and getattr(layer, "output_padding", None) is not None:
        raise _unsupported(layer, model, "an explicit output_padding")
    if layer.padding not in ("same", "valid"):
        raise _unsupported(layer, model, f"padding {layer.padding!r}")
    return {"op": "conv2d_transpose" if transpose else "conv2d", "input": source, "output": out,
            "strides": [int(s) for s in layer.strides], "padding": layer.padding,
            **_params(layer, cfg, weights, model)}  # fmt: skip


def _params(layer, cfg: dict, weights: list[np.ndarray], model) -> dict[str, Any]:
    """The layer's kernel (and bias) appended to `weights`, and its activation."""
    values = layer.get_weights()
    params: dict[str, Any] = {"activation": _activation(layer, cfg, model), "kernel": len(weights)}
    weights.append(values[0])
    if layer.use_bias:
        params["bias"] = len(weights)
        weights.append(values[1])
    return params


def _activation(layer, cfg: dict, model) -> str:
    name = cfg.get("activation", "linear")
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise _unsupported(layer, model, f"activation {name!r} (supported: {', '.join(ACTIVATIONS)})")
    return name


def _check_channels_last(layer, cfg: dict, model) -> None:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, model, "channels_first data")


def _unsupported(layer, model, why: str) -> VaelabError:
    return VaelabError(
        f"the page cannot run layer {layer.name!r} ({type(layer).__name__}) of the {model.name}: {why}; "
        f"it runs {SUPPORTED}"
    )


def _topological(layers: list[dict]) -> list[dict]:
    """The layer configurations ordered so that every layer comes after the layers it reads."""
    by_name = {cfg["name"]: cfg for cfg in layers}
    graph = {
        name: {source.split(":")[0] for node in cfg["inbound_nodes"] for source in _node_inputs(node)}
        for name, cfg in by_name.items()
    }
    return [by_name[name] for name in graphlib.TopologicalSorter(graph).static_order()]


def _node_inputs(node: dict) -> list[str]:
    """The tensors a layer's call reads: its arguments, a list of tensors (Concatenate's) taken apart."""
    args = [a for arg in node["args"] for a in (arg if isinstance(arg, list | tuple) else [arg])]
    return [_tensor_name(arg) for arg in args]


def _tensor_name(arg: dict) -> str:
    if not isinstance(arg, dict) or arg.get("class_name") != "__keras_tensor__":
        raise VaelabError(f"the page cannot run a layer called with a non-tensor argument ({arg!r})")
    return _history_name(arg["config"]["keras_history"])


def _history_name(history: list) -> str:
    layer, node, index = history
    return f"{layer}:{node}:{index}"


def _as_list(entries: list) -> list[list]:
    """`input_layers`/`output_layers` of a config: one [layer, node, index] triple, or a list of them."""
    return [entries] if entries and isinstance(entries[0], str) else list(entries)
