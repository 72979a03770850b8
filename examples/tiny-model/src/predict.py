"""Load the example weights and score one row: shows reading a model straight from a kitfs mount."""

import struct
import sys
from pathlib import Path


def load(path: Path) -> list[float]:
    data = path.read_bytes()
    return list(struct.unpack(f"<{len(data) // 4}f", data))


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    weights = load(root / "model" / "weights.bin")
    print(f"loaded {len(weights)} weights, first {weights[0]:.4f}")
