"""Model loader processes for the model-load benchmark, started before the step they time.

Run as a script, a loader imports numpy and safetensors, prints ``ready``, then for each JSON line
on stdin (a list of file paths) reads the small files whole and every ``.safetensors`` file with
``safetensors.numpy.load_file`` (one ``read`` of the file), or with ``--mmap`` through
``safetensors.safe_open`` (the file mapped, each tensor copied out of the mapping: how vLLM and
transformers load), and answers one JSON line (bytes read, tensor bytes, seconds, or the
error). The parent (``LoaderPool``) starts them ahead of time, so a timed step holds the loads
alone, not Python's start-up and imports; several loaders load at once as tensor-parallel ranks do.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from pathlib import Path

READY = "ready"
LOAD_TIMEOUT = 1800.0  # a load that takes longer has hung (a stuck mount): the loaders are killed


def _mapped(path: str) -> int:
    """Every tensor of a safetensors file copied out of its mapping; their bytes."""
    from safetensors import safe_open

    size = 0
    with safe_open(path, framework="np") as mapped:
        for key in mapped.keys():  # noqa: SIM118  (safe_open has keys(), not __iter__)
            size += mapped.get_tensor(key).nbytes
    return size


def _load(paths: list[str], mmap: bool = False) -> dict[str, float | int]:
    from safetensors.numpy import load_file

    start = time.perf_counter()
    read = tensors = 0
    for path in paths:
        if path.endswith(".safetensors") and mmap:
            size = _mapped(path)
            tensors += size
            read += size
        elif path.endswith(".safetensors"):
            loaded = load_file(path)
            size = sum(array.nbytes for array in loaded.values())
            tensors += size
            read += size
            del loaded
        else:
            read += len(Path(path).read_bytes())
    return {"read": read, "tensor_bytes": tensors, "seconds": time.perf_counter() - start}


def worker() -> int:
    """The loader process's loop (see the module docstring)."""
    import numpy  # noqa: F401  (imported before ``ready``: the timed loads exclude imports)
    import safetensors.numpy  # noqa: F401

    print(READY, flush=True)
    for line in sys.stdin:
        try:
            answer: dict[str, object] = dict(_load(json.loads(line), "--mmap" in sys.argv))
        except (OSError, ValueError, RuntimeError) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


class LoaderPool:
    """``count`` loader processes, ready before the step; ``load`` times one round of loads."""

    def __init__(self, count: int, mmap: bool = False) -> None:
        self.mmap = mmap  # load through safe_open (mapped) rather than load_file (read)
        self.processes: list[subprocess.Popen[str]] = []
        try:
            for _ in range(count):
                self.processes.append(self._spawn())
        except BaseException:
            self.close()
            raise

    def _spawn(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *(["--mmap"] if self.mmap else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != READY:
            process.kill()
            process.wait(10)
            raise RuntimeError("a loader process did not start (numpy and safetensors installed?)")
        return process

    def load(self, assignments: list[list[Path]]) -> tuple[float, int]:
        """Hand loader i the files ``assignments[i]`` (all at once); wait for every answer.

        Returns the wall seconds from handing out the work to the last answer, and the tensor
        bytes loaded in all; raises RuntimeError when a loader fails or dies."""
        while len(self.processes) < len(assignments):  # after ``kill``, or a pool made smaller
            self.processes.append(self._spawn())
        start = time.perf_counter()
        for process, files in zip(self.processes, assignments, strict=False):
            assert process.stdin is not None
            process.stdin.write(json.dumps([str(f) for f in files]) + "\n")
            process.stdin.flush()
        deadline = start + LOAD_TIMEOUT
        answers = [self._answer(p, deadline) for p in self.processes[: len(assignments)]]
        wall = time.perf_counter() - start
        errors = [str(a["error"]) for a in answers if "error" in a]
        if errors:
            raise RuntimeError("a loader failed: " + errors[0])
        return wall, sum(int(str(a["tensor_bytes"])) for a in answers)

    def _answer(self, process: subprocess.Popen[str], deadline: float) -> dict[str, object]:
        assert process.stdout is not None
        ready, _, _ = select.select(
            [process.stdout], [], [], max(0.0, deadline - time.perf_counter())
        )
        if not ready:
            self.kill()
            raise RuntimeError(f"a load gave no answer in {LOAD_TIMEOUT:.0f} s: loaders killed")
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a loader process exited ({process.poll()}) during a load")
        answer: dict[str, object] = json.loads(line)
        return answer

    def kill(self) -> None:
        """End the loaders now (one is stuck in a read); the next ``load`` starts new ones."""
        for process in self.processes:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.processes = []

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []

    def __enter__(self) -> LoaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(worker())
