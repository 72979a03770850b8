"""A Hugging Face style model directory for the model-load benchmark, built from random data.

``model/`` holds config.json, generation_config.json, tokenizer.json, the safetensors shards written
by ``safetensors.numpy.save_file`` (float16 tensors of random bits: nothing computes on them, so NaNs
do no harm) and, for more than one shard, model.safetensors.index.json, as `save_pretrained` lays
them out. A Kitfile beside it names ``model/`` as the ModelKit's model, so it packs into one layer.
The directory is kept between runs (a ``.complete`` marker) and rebuilt only when its shape changes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
TENSOR_MIB = 32  # one tensor's size; a shard holds shard_mib / TENSOR_MIB of them
HIDDEN = 4096
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json")
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class HfModel:
    """A built model: its context directory (with the Kitfile), its files and its tensor bytes."""

    context: Path
    shards: tuple[str, ...]
    tensor_bytes: int

    @property
    def model_dir(self) -> Path:
        return self.context / "model"

    @property
    def files(self) -> tuple[str, ...]:
        """Every file a loader reads, small ones first, relative to the model directory."""
        index = (INDEX,) if len(self.shards) > 1 else ()
        return (*SMALL_FILES, *index, *self.shards)

    def shard_bytes(self) -> int:
        return sum((self.model_dir / shard).stat().st_size for shard in self.shards)


def shard_names(count: int) -> tuple[str, ...]:
    if count == 1:
        return ("model.safetensors",)
    return tuple(f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1))


def ensure_model(context: Path, shards: int, shard_mib: int, seed: int) -> HfModel:
    """The model at ``context`` with ``shards`` shards of ``shard_mib`` MiB each (built if absent)."""
    marker = context / ".complete"
    shape = f"{shards}x{shard_mib}MiB seed {seed}\n"
    names = shard_names(shards)
    per_shard = _tensor_sizes(shard_mib)
    total = shards * sum(per_shard)
    if marker.exists() and marker.read_text() == shape:
        return HfModel(context, names, total)
    shutil.rmtree(context, ignore_errors=True)
    model_dir = context / "model"
    model_dir.mkdir(parents=True)
    weight_map = _write_shards(model_dir, names, per_shard, seed)
    _write_small_files(model_dir, len(weight_map), total, weight_map if shards > 1 else None)
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\n"
        f"package:\n  name: modelload-{shards}x{shard_mib}\n"
        "model:\n  name: bench-llm\n  path: model\n"
    )
    marker.write_text(shape)
    return HfModel(context, names, total)


def _tensor_sizes(shard_mib: int) -> list[int]:
    """Byte sizes of one shard's tensors: TENSOR_MIB each, the remainder in a last smaller one."""
    full, rest = divmod(shard_mib, TENSOR_MIB)
    sizes = [TENSOR_MIB * MIB] * full
    if rest:
        sizes.append(rest * MIB)
    return sizes


def _write_shards(
    model_dir: Path, names: tuple[str, ...], sizes: list[int], seed: int
) -> dict[str, str]:
    """Write each shard with ``save_file``; returns the weight map (tensor name -> shard file)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    weight_map: dict[str, str] = {}
    layer = 0
    for name in names:
        tensors = {}
        for size in sizes:
            key = f"model.layers.{layer}.mlp.weight"
            tensors[key] = np.frombuffer(rng.bytes(size), dtype=np.float16).reshape(-1, HIDDEN)
            weight_map[key] = name
            layer += 1
        save_file(tensors, str(model_dir / name), metadata={"format": "pt"})
        del tensors
    return weight_map


def _write_small_files(
    model_dir: Path, layers: int, total: int, weight_map: dict[str, str] | None
) -> None:
    config = {
        "architectures": ["BenchForCausalLM"],
        "model_type": "bench",
        "hidden_size": HIDDEN,
        "num_hidden_layers": layers,
        "torch_dtype": "float16",
        "vocab_size": 32000,
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 256}
    (model_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    vocab = {f"tok{i}": i for i in range(32000)}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer) + "\n")
    if weight_map is not None:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (model_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")
