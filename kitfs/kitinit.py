"""``kitfs init``: write a Kitfile for a directory, with kit's detection rules.

A port of kit's Kitfile generation (pkg/lib/kitfile/generate/generate.go, filesystem.go, skill.go
and pkg/cmd/kitinit): files at the top of the directory are classified one by one by name and
suffix (prompt, model weights, metadata, docs, datasets, else unknown), subdirectories as wholes
(``docs``; ``src``/``pkg``/``lib``/``build`` as code; otherwise by what they hold), a directory with
a ``SKILL.md`` becomes one prompt entry described by its front matter, and a ``LICENSE`` file's
license is attached where kit attaches it. kit identifies licenses with google/licensecheck; we
recognise the common ones by their text (see :func:`detect_license`).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kitfs.atomic import write_atomic
from kitfs.errors import KitfsError
from kitfs.kitfile import DEFAULT_NAMES, MANIFEST_VERSION, Kitfile

log = logging.getLogger(__name__)

# pkg/lib/kitfile/generate/generate.go
MODEL_SUFFIXES = (
    ".safetensors", ".pkl", ".joblib",
    ".pth", ".pt", ".mar", ".pt2", ".ptl",
    ".pb", ".ckpt", ".tflite", ".tfrecords",
    ".npy", ".npz",
    ".keras", ".h5", ".caffemodel", ".pmml", ".coreml",
    ".gguf", ".ggml", ".ggmf", ".llamafile", ".onnx",
)  # fmt: skip
MODEL_PATTERNS = ("*pytorch_model*.bin",)
DOCS_SUFFIXES = (".md", ".adoc", ".html", ".pdf")
METADATA_SUFFIXES = (".json", ".yaml", ".xml", ".txt")
DATASET_SUFFIXES = (".tar", ".zip", ".parquet", ".csv")
PROMPT_NAMES = ("agents.md", "skill.md", "claude.md")
CODE_DIRS = ("src", "pkg", "lib", "build")
# pkg/lib/filesystem/ignore/osfiles.go: never listed
OS_FILES = (
    ".DS_Store", ".AppleDouble", ".LSOverride", ".Spotlight-V100", ".Trashes",
    "Thumbs.db", "desktop.ini", "$RECYCLE.BIN", "ehthumbs.db",
)  # fmt: skip

MODEL, DATASET, CODE, DOCS, METADATA, PROMPT, UNKNOWN = range(7)  # kit's fileType iota order
MCPB = 7  # an MCP bundle: always its own mcpServers entry (testing/testdata/kitfile-generation)
MCPB_SUFFIX = ".mcpb"


class InitError(KitfsError):
    """The Kitfile cannot be generated or written."""


@dataclass(frozen=True)
class FileListing:
    name: str
    path: str  # relative to the context directory, forward slashes
    size: int


@dataclass
class DirectoryListing:
    name: str
    path: str
    # Where the files can be read (license text, SKILL.md front matter); None for a listing of a
    # remote repository, whose files kit has not downloaded when it generates the Kitfile.
    context: Path | None
    files: list[FileListing] = field(default_factory=list)
    subdirs: list[DirectoryListing] = field(default_factory=list)


def list_directory(context: Path, rel: str = ".") -> DirectoryListing:
    """kit's DirectoryListingFromFS: names sorted, OS clutter skipped, only files and directories
    (symbolic links are neither, as for Go's DirEntry.Type())."""
    listing = DirectoryListing(posixpath.basename(rel) if rel != "." else ".", rel, context)
    full = context / rel
    try:
        names = sorted(os.listdir(full))
    except OSError as exc:
        raise InitError(
            f"Error processing directory: failed to read directory {full}: {exc.strerror}"
        ) from None
    for name in names:
        if any(name.lower() == os_file.lower() for os_file in OS_FILES):
            continue
        child = name if rel == "." else f"{rel}/{name}"
        try:
            st = os.lstat(context / child)
        except OSError as exc:
            raise InitError(
                f"Error processing directory: cannot read {child}: {exc.strerror}"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            listing.subdirs.append(list_directory(context, child))
        elif stat.S_ISREG(st.st_mode):
            listing.files.append(FileListing(name, child, st.st_size))
    return listing


def file_type(filename: str) -> int:
    """kit's determineFileType: prompts first (their suffixes collide), then weights, metadata,
    docs, datasets."""
    base = posixpath.basename(filename).lower()
    if base in PROMPT_NAMES or ".prompt" in base:
        return PROMPT
    if filename.endswith(MCPB_SUFFIX):
        return MCPB
    if filename.endswith(MODEL_SUFFIXES):
        return MODEL
    if any(fnmatch.fnmatchcase(filename, p) for p in MODEL_PATTERNS):
        return MODEL
    if filename.endswith(METADATA_SUFFIXES):
        return METADATA
    if filename.endswith(DOCS_SUFFIXES):
        return DOCS
    if filename.endswith(DATASET_SUFFIXES):
        return DATASET
    return UNKNOWN


def _slash_dir(path: str) -> str:
    return path if path == "." or path.endswith("/") else path + "/"


def generate(listing: DirectoryListing, package: dict[str, Any] | None = None) -> Kitfile:
    """kit's GenerateKitfile (depth 0): the Kitfile for a directory listing."""
    data: dict[str, Any] = {"manifestVersion": MANIFEST_VERSION, "package": dict(package or {})}
    skill = _skill_file(listing)
    if skill is not None:
        prompt, front = _skill_prompt(listing)
        data["prompts"] = [prompt]
        if front:
            pkg = data["package"]
            for key, value in (
                ("name", front.get("name")),
                ("description", front.get("description")),
                ("license", front.get("license")),
            ):
                if not pkg.get(key) and value:
                    pkg[key] = value
        return Kitfile(_prune(data))
    model_files, metadata_files, unknown, license_id = _classify_files(data, listing)
    code = data.setdefault("code", [])
    if len(unknown) > 5:
        code.append({"path": "."})
    else:
        code.extend({"path": f.path} for f in unknown)
    if model_files:
        _add_model(data, model_files)
        data["model"].setdefault("parts", []).extend({"path": f.path} for f in metadata_files)
    else:
        data.setdefault("datasets", []).extend({"path": f.path} for f in metadata_files)
    _attach_license(data, license_id)
    _skill_package_metadata(data, listing)
    return Kitfile(_prune(data))


def _classify_files(
    data: dict[str, Any], listing: DirectoryListing
) -> tuple[list[FileListing], list[FileListing], list[FileListing], str]:
    """kit's processSubdirFiles at depth 0: top-level files one by one, subdirectories whole."""
    models: list[FileListing] = []
    metadata: list[FileListing] = []
    unknown: list[FileListing] = []
    license_id = ""
    for f in listing.files:
        if f.name in DEFAULT_NAMES:
            continue
        lower = f.name.lower()
        if lower.startswith("readme"):
            data.setdefault("docs", []).append({"path": f.path, "description": "Readme file"})
            continue
        if lower.startswith("license"):
            data.setdefault("docs", []).append({"path": f.path, "description": "License file"})
            license_id = _read_license(listing, f)
            if not license_id:
                log.warning("Unable to determine license type")
            continue
        kind = file_type(f.path)
        if kind == MODEL:
            models.append(f)
        elif kind == METADATA:
            metadata.append(f)
        elif kind == DOCS:
            data.setdefault("docs", []).append({"path": f.path})
        elif kind == DATASET:
            data.setdefault("datasets", []).append({"path": f.path})
        elif kind == PROMPT:
            data.setdefault("prompts", []).append({"path": f.path})
        elif kind == MCPB:
            _add_bundle(data, f)
        else:
            unknown.append(f)
    for sub in listing.subdirs:
        models += _add_directory(data, sub)
    return models, metadata, unknown, license_id


def _add_directory(data: dict[str, Any], listing: DirectoryListing) -> list[FileListing]:
    """kit's addDirToKitfile: one entry for a whole directory; returns model files it holds."""
    if _skill_file(listing) is not None:
        prompt, _ = _skill_prompt(listing)
        data.setdefault("prompts", []).append(prompt)
        return []
    path = _slash_dir(listing.path)
    if listing.name == "docs":
        data.setdefault("docs", []).append({"path": path})
        return []
    if listing.name in CODE_DIRS:
        data.setdefault("code", []).append({"path": path})
        return []
    contents: dict[int, list[str]] = {}
    for sub in listing.subdirs:
        contents.setdefault(UNKNOWN, []).append(sub.path)
    models: list[FileListing] = []
    metadata: list[FileListing] = []
    files = []
    for f in listing.files:
        if file_type(f.name) == MCPB:
            _add_bundle(data, f)  # a bundle is one file: it never joins a directory entry
        else:
            files.append(f)
    if not files and not listing.subdirs and listing.files:
        return []  # a directory of bundles only
    for f in files:
        kind = file_type(f.name)
        if kind == MODEL:
            models.append(f)
        elif kind == METADATA:
            metadata.append(f)
        contents.setdefault(kind, []).append(f.path)
    kinds = [k for k in sorted(contents) if k != METADATA]
    if len(kinds) > 1:
        data.setdefault("code", []).append({"path": path})
        return models
    overall = kinds[0] if kinds else UNKNOWN
    if overall == MODEL:
        return models + metadata
    section = {DATASET: "datasets", DOCS: "docs", PROMPT: "prompts"}.get(overall, "code")
    data.setdefault(section, []).append({"path": path})
    return models


def _add_bundle(data: dict[str, Any], f: FileListing) -> None:
    data.setdefault("mcpServers", []).append({"name": f.path[: -len(MCPB_SUFFIX)], "path": f.path})


def _add_model(data: dict[str, Any], files: list[FileListing]) -> None:
    """kit's addModelToKitfile: one file is the model; of several, one 1.5 times the average
    size is the model and the rest parts, else the first in order is."""
    if len(files) == 1:
        f = files[0]
        data["model"] = {"name": _strip_ext(f.path, f.name), "path": f.path}
        return
    largest = max(files, key=lambda f: f.size)  # the first of the largest, as kit's loop
    largest = next(f for f in files if f.size == largest.size)
    average = sum(f.size for f in files) // len(files)
    if largest.size > average + average // 2:
        data["model"] = {"name": _strip_ext(largest.path, largest.name), "path": largest.path}
        data["model"]["parts"] = [{"path": f.path} for f in files if f != largest]
    else:
        data["model"] = {"path": files[0].path, "parts": [{"path": f.path} for f in files[1:]]}


def _strip_ext(path: str, name: str) -> str:
    ext = posixpath.splitext(name)[1]
    return path[: -len(ext)] if ext and path.endswith(ext) else path


def _attach_license(data: dict[str, Any], license_id: str) -> None:
    # kit's order, including its quirk of writing an empty license where nothing was found.
    if data.get("model") and license_id:
        data["model"]["license"] = license_id
    elif len(data.get("datasets") or []) == 1:
        data["datasets"][0]["license"] = license_id
    elif len(data.get("code") or []) == 1:
        data["code"][0]["license"] = license_id
    else:
        data["package"]["license"] = license_id


def _skill_file(listing: DirectoryListing) -> FileListing | None:
    return next((f for f in listing.files if f.name.lower() == "skill.md"), None)


def _skill_prompt(listing: DirectoryListing) -> tuple[dict[str, Any], dict[str, str] | None]:
    prompt: dict[str, Any] = {"path": listing.path}
    skill = _skill_file(listing)
    front = _frontmatter(listing, skill) if skill else None
    if front:
        prompt = {
            "name": front.get("name", ""),
            "path": listing.path,
            "description": front.get("description", ""),
        }
    return prompt, front


def _skill_package_metadata(data: dict[str, Any], listing: DirectoryListing) -> None:
    """kit's applySkillMetadataToPackage: skills in subdirectories name a prompts-only Kitfile."""
    fronts = []
    for sub in listing.subdirs:
        skill = _skill_file(sub)
        if skill is not None:
            front = _frontmatter(listing, skill)
            if front:
                fronts.append(front)
    if not fronts:
        return
    pkg = data["package"]
    only_prompts = not (
        data.get("model") or data.get("code") or data.get("datasets") or data.get("docs")
    )
    if only_prompts and len(fronts) == 1:
        if not pkg.get("name"):
            pkg["name"] = fronts[0].get("name", "")
        if not pkg.get("description"):
            pkg["description"] = fronts[0].get("description", "")
    if not pkg.get("license") and fronts[0].get("license"):
        pkg["license"] = fronts[0]["license"]


def _read_license(listing: DirectoryListing, f: FileListing) -> str:
    return detect_license(listing.context / f.path) if listing.context is not None else ""


def _frontmatter(listing: DirectoryListing, skill: FileListing) -> dict[str, str] | None:
    if listing.context is None:
        return None
    return skill_frontmatter(listing.context / skill.path)


def skill_frontmatter(path: Path) -> dict[str, str] | None:
    """name, description and license from a SKILL.md's ``---`` front matter (kit's
    parseSkillFrontmatter); None when there is none or it does not parse."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    except OSError as exc:
        log.warning("Failed to read %s: %s", path, exc.strerror)
        return None
    lines = text.split("\n")
    if lines[0] != "---" or "---" not in lines[1:]:
        return None
    body = "\n".join(lines[1 : lines.index("---", 1)])
    if not body.strip():
        return None
    try:
        raw = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        log.warning("Malformed frontmatter in %s: %s", path, " ".join(str(exc).split()))
        return None
    if not isinstance(raw, dict):
        log.warning("Malformed frontmatter in %s: not a mapping", path)
        return None
    front = {}
    for key in ("name", "description", "license"):
        value = raw.get(key)
        if isinstance(value, dict | list):
            log.warning("Malformed frontmatter in %s: %s is not a string", path, key)
            return None
        if value is not None:
            front[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return front


# Distinctive text of common licenses -> SPDX identifier (kit: google/licensecheck, which matches
# full templates; a file matching none or several of these is "unknown", as there).
_LICENSE_MARKERS = (
    ("Apache-2.0", ("apache license", "version 2.0")),
    ("MIT", ("permission is hereby granted, free of charge",)),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "neither the name")),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",)),
    ("MPL-2.0", ("mozilla public license", "2.0")),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software",)),
    ("Unlicense", ("this is free and unencumbered software released into the public domain",)),
    ("CC0-1.0", ("cc0 1.0 universal",)),
)


LICENSE_READ_LIMIT = 1 << 20


def detect_license(path: Path) -> str:
    try:
        with open(path, "rb") as handle:  # a license is a few KiB; read no more than 1 MiB
            raw = handle.read(LICENSE_READ_LIMIT)
    except OSError:
        return ""
    text = " ".join(raw.decode("utf-8", errors="replace").lower().split())
    for spdx, markers in _LICENSE_MARKERS:
        if all(m in text for m in markers):
            return spdx
    return ""


def _prune(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in ([], None)}


def init_directory(
    directory: Path,
    *,
    output: Path | None = None,
    package: dict[str, Any] | None = None,
    force: bool = False,
) -> tuple[Path, str]:
    """Generate the Kitfile for ``directory`` and write it (atomically); return where and the YAML."""
    if not directory.is_dir():
        raise InitError(f"Error processing directory: {directory} is not a directory")
    target = output or directory / "Kitfile"
    if os.path.lexists(target) and not force:
        raise InitError(f"Kitfile already exists at {target}. Use '--force' to overwrite")
    text = generate(list_directory(directory), package).to_yaml()
    try:
        write_atomic(target, text.encode())
    except OSError as exc:
        raise InitError(f"Failed to write Kitfile: {exc.strerror}") from None
    return target, text
