"""Validation of a 10,000-document repository against PyYAML's C loader parsing the same files.

Both are measured in the same run on the same files (best of several rounds, after a warm-up), so
the ratio does not depend on the machine. Target: validation at most 2.0x parse time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from reconciler.manifests.load import read_tree
from reconciler.manifests.validate import validate_tree

TARGET = 2.0
DOCS_PER_FILE = 10


def generate(root: Path, documents: int) -> int:
    """Write a realistic repository: per application 3 releases, 12 devices, 1 deployment..."""
    docs: list[str] = []
    apps = max(1, documents // 20)
    for a in range(apps):
        app = f"app-{a}"
        docs.append(_doc("Application", app, f"  description: Application number {a}\n"))
        docs.append(_doc("Volume", f"{app}-data", "  driver: local\n"))
        docs.append(_doc("Network", f"{app}-net", "  internal: false\n"))
        for v in range(3):
            docs.append(_release(app, f"1.{v}.0"))
        for d in range(12):
            labels = f"{{site: s{d % 4}, app: {app}}}"
            docs.append(
                _doc("Device", f"{app}-dev-{d}", f"  systemModel: rpi{d % 2 + 3}\n", labels)
            )
        for d in range(2):
            target = f"  selector: {{matchLabels: {{app: {app}, site: s{d}}}}}\n"
            spec = f'  application: {app}\n  release: "1.{d}.0"\n{target}'
            docs.append(_doc("Deployment", f"{app}-dep-{d}", spec))
    docs = docs[:documents]
    for i in range(0, len(docs), DOCS_PER_FILE):
        folder = root / f"part-{i // 1000}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"docs-{i}.yaml").write_text("---\n".join(docs[i : i + DOCS_PER_FILE]))
    return len(docs)


def _doc(kind: str, name: str, spec: str, labels: str = "{}") -> str:
    return (
        f"apiVersion: hedgerow.dev/v1alpha1\nkind: {kind}\n"
        f"metadata:\n  name: {name}\n  labels: {labels}\nspec:\n{spec}"
    )


def _release(app: str, version: str) -> str:
    containers = "".join(
        f"""    - name: c{c}
      image: registry.example.com:5000/{app}/c{c}:{version}
      env: {{MODE: production, LEVEL: "{c}"}}
      restartPolicy: unless-stopped
      networks: [{app}-net]
      volumes: [{{volume: {app}-data, target: /data/{c}}}]
      portBindings: ["127.0.0.1:{8000 + c}:80/tcp"]
      memory: 64Mi
      cpu: {{period: 100000, quota: 50000}}
"""
        for c in range(2)
    )
    spec = (
        f'  application: {app}\n  version: "{version}"\n'
        f"  supportedSystemModels: [rpi3, rpi4]\n  containers:\n{containers}"
    )
    return _doc("Release", f"{app}-{version.replace('.', '-')}", spec)


def parse_only(root: Path) -> int:
    """The baseline: read every manifest file and parse it with PyYAML's C loader."""
    count = 0
    for _, content in read_tree(root):
        assert isinstance(content, bytes)
        count += sum(1 for d in yaml.load_all(content, Loader=yaml.CSafeLoader) if d is not None)
    return count


def validate(root: Path) -> int:
    report = validate_tree(root)
    assert report.valid, report.problems[:5]
    return report.documents


def best(fn: Callable[[Path], int], root: Path, rounds: int) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn(root)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        total = generate(root, args.documents)
        parse_only(root), validate(root)  # warm caches and imports
        parse_time, parsed = best(parse_only, root, args.rounds)
        validate_time, validated = best(validate, root, args.rounds)
    assert parsed == validated == total, (parsed, validated, total)
    ratio = validate_time / parse_time
    print(f"documents:            {total}")
    print(f"parse (CSafeLoader):  {parse_time * 1000:8.1f} ms")
    print(f"hedgerow validate:    {validate_time * 1000:8.1f} ms")
    print(f"ratio:                {ratio:8.2f}x  (target <= {TARGET}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
