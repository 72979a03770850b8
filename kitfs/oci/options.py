"""How to talk to a registry, as the flags and ``-o`` options say: a plain record, kept apart from
the client so that commands can build it without loading httpx and trio."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from kitfs.errors import UsageError

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to a registry: transport security, proxy, timeouts, retries and upload sizes."""

    plain_http: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    proxy: str | None = None
    concurrency: int = 5
    timeout: float = 60.0  # idle timeout: seconds without a byte, and before the answer
    min_rate: int = 1024  # bytes/s every rate_window must average (kitfs.oci.deadline); 0: off
    rate_window: float = 20.0
    retries: int = 5
    backoff: float = 0.5
    backoff_cap: float = 30.0
    chunked_threshold: int = 8 * 1024 * 1024  # blobs up to this size are verified, then PUT whole
    chunk_size: int = 0  # larger blobs: PATCH size; 0 streams them in one PUT if the registry lets
    registries_conf: str | None = None  # read by kitfs.oci.endpoints, not by this client
    parallel_min: int = 64 * 1024 * 1024  # blobs this large download as parallel Range parts
    range_part: int = 32 * 1024 * 1024  # ... of this size

    def __post_init__(self) -> None:
        if self.proxy is not None:
            check_proxy(self.proxy)


def check_proxy(text: str) -> str:
    """A proxy URL httpx can use (``http://host:port``), else a UsageError saying what is wrong."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise UsageError(
            f"--proxy {text!r} is not a proxy URL: use {'|'.join(PROXY_SCHEMES)}://HOST[:PORT]"
        )
    if port is None and parts.netloc.rpartition("@")[2].endswith(":"):
        raise UsageError(f"--proxy {text!r} has an empty port")
    return text
