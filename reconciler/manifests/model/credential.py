"""ImageCredential: registry secrets, SOPS-encrypted in git and never shown."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from reconciler.manifests.model.base import Manifest, Spec
from reconciler.manifests.model.fields import Registry, checked

ENCRYPTED = re.compile(
    r"ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,"
    r"type:(?:str|int|float|bool|time|comment)\]"
)


def _check_encrypted(value: str) -> None:
    # The message never repeats the value: it may be a plaintext secret.
    if not ENCRYPTED.fullmatch(value):
        raise ValueError(
            "is not SOPS-encrypted: never commit a plaintext secret; create the credential with "
            "`hedgerow credential create` or encrypt the file with `sops --encrypt --in-place`"
        )


Encrypted = Annotated[str, checked(_check_encrypted)]


class ImageCredentialSpec(Spec):
    registry: Registry | None = Field(None, description="Registry host[:port]; any if omitted.")
    username: Encrypted
    password: Encrypted


class ImageCredential(Manifest):
    """Registry credentials; the `sops` block is written by sops or `hedgerow credential create`."""

    plural = "imagecredentials"
    kind: Literal["ImageCredential"]
    spec: ImageCredentialSpec
    sops: dict[str, Any] = Field(description="SOPS metadata: recipients, MAC, rules.")
