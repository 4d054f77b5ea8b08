"""Real KMS servers for tests: a SoftHSM2 token in a temporary folder and moto's KMS server.

Plain helpers, not pytest fixtures, so any test module (or a script) can reuse them and wrap them
in fixtures of the scope it needs. Nothing here is mocked: the pkcs11 backend talks to SoftHSM2
through its real PKCS#11 module and the aws backend talks HTTP to moto's server.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.system import free_port, require_tool

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def ensure_softhsm() -> str:
    """The SoftHSM2 PKCS#11 module path (`make test` installs the package before pytest starts)."""
    require_tool("softhsm2")
    return SOFTHSM_MODULE


@dataclass(frozen=True)
class SoftHsmToken:
    """Everything a pkcs11 client needs to reach one initialised SoftHSM2 token."""

    module: str
    conf: Path
    token_label: str
    user_pin: str
    so_pin: str


_TOKEN: SoftHsmToken | None = None


@contextmanager
def softhsm_token(base_dir: Path, *, label: str = "aiemaily-test", user_pin: str = "1234",
                  so_pin: str = "5678") -> Iterator[SoftHsmToken]:
    """Create a SoftHSM2 token under base_dir and point SOFTHSM2_CONF at it while the block runs.

    SoftHSM2 reads SOFTHSM2_CONF once, when the module is initialised, and python-pkcs11 keeps one
    initialised module per process. So there is one token per process: a nested or repeated call
    while one is active yields the active token, and callers tell their keys apart by key label.
    """
    global _TOKEN
    if _TOKEN is not None:
        yield _TOKEN
        return
    module = ensure_softhsm()
    tokens = base_dir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = base_dir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin],
            check=True, stdout=subprocess.DEVNULL,
        )
        _TOKEN = SoftHsmToken(module=module, conf=conf, token_label=label, user_pin=user_pin, so_pin=so_pin)
        yield _TOKEN
    finally:
        _TOKEN = None
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@contextmanager
def softhsm_token_removed(token: SoftHsmToken) -> Iterator[None]:
    """The token leaves its slot while the block runs, and comes back intact after it.

    Stands for an HSM that goes away under a running process (a network HSM whose link drops) and
    returns. The truest copy would be SoftHSM2 behind `p11-kit server` (a PKCS#11 module exported
    over a socket, stopped and started again), but Debian 12's p11-kit (0.24.1) cannot carry
    CKM_AES_GCM parameters over that socket (MechanismInvalid; support came in 0.25.0), and the
    vault's KEK wraps with AES-GCM. So the token goes the way SoftHSM2 knows of: its folder leaves
    the token directory (what `softhsm2-util --delete-token` removes), kept aside and put back.
    Measured on a logged-in session: key handles turn invalid, key searches come back empty and
    token lookups fail (GeneralError); once the folder is back, the process sees the token again
    only after C_Finalize/C_Initialize, as network HSM clients often need after an outage.
    """
    tokens = token.conf.parent / "tokens"
    away = token.conf.parent / "removed"
    away.mkdir(exist_ok=True)
    moved = [folder.rename(away / folder.name) for folder in list(tokens.iterdir())]
    try:
        yield
    finally:
        for folder in moved:
            folder.rename(tokens / folder.name)


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's KMS/S3 server in a thread on a free port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
