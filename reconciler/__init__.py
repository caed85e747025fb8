"""Hedgerow's controller: reads manifests from git, validates them, and plans what devices run."""

API_VERSION = "hedgerow.dev/v1alpha1"
GROUP = "hedgerow.dev"
VERSION = "v1alpha1"
