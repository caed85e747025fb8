"""Secret: an application's own secrets (database passwords, API keys), SOPS-encrypted in git
like ImageCredential, consumed by containers as env values or files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from reconciler.manifests.model.base import Manifest, Spec
from reconciler.manifests.model.credential import Encrypted
from reconciler.manifests.model.fields import _pattern_check, checked

# Kubernetes' rule for a Secret's keys: they become file names and env references
_KEY_HELP = "secret key: letters, digits, '-', '_' or '.'"
check_secret_key = _pattern_check(r"[-._a-zA-Z0-9]+", _KEY_HELP, 253)
SecretKey = Annotated[str, checked(check_secret_key)]


class SecretSpec(Spec):
    data: dict[SecretKey, Encrypted] = Field(
        min_length=1, description="Key → value; every value SOPS-encrypted."
    )


class Secret(Manifest):
    """Immutable like ImageCredential: a new value goes under a new name, so a release naming
    it always means the same values. The `sops` block is written by `hedgerow secret create`."""

    plural = "secrets"
    kind: Literal["Secret"]
    spec: SecretSpec
    sops: dict[str, Any] = Field(description="SOPS metadata: recipients, MAC, rules.")
