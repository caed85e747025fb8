"""What every document has: apiVersion, kind, metadata, spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from reconciler.manifests.model.fields import DnsLabel, LabelKey, Labels, Model
from reconciler.manifests.problems import FieldPath

Finding = tuple[FieldPath, str]


class Metadata(Model):
    name: DnsLabel = Field(description="Unique per kind; DNS-1123 label.")
    labels: Labels = Field(default_factory=dict)
    annotations: dict[LabelKey, str] = Field(default_factory=dict)


class Spec(Model):
    def findings(self) -> Iterator[Finding]:
        """Rules between fields of one document, as (field path under spec, message)."""
        return iter(())


class Manifest(Model):
    """A document of one kind; subclasses fix `kind` and `spec`."""

    plural: ClassVar[str]
    api_version: Literal["hedgerow.dev/v1alpha1"]
    kind: str
    metadata: Metadata
    spec: Spec
