"""CustomResourceDefinitions for a real API server, rebuilt from the schemas vendored in tests/fixtures/crds.

The vendored files hold only each CRD's openAPIV3Schema (SOURCES.md); a schema file's name gives the group, the
plural and the version (`<group>_<plural>.<version>.schema.json.gz`). What else a CRD needs is small and listed in
NAMES below, read off the upstream CRD files at the commits SOURCES.md names: the kind, and whether the CRD has the
status subresource (all but ServingRuntime do; with it, a create or update through the main resource ignores
`status`). Only the vendored version is served, as the storage version; the schema is used unmodified, so the server
validates, prunes and defaults exactly as upstream's CRD makes it.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CRD_SCHEMAS = Path(__file__).resolve().parent / "fixtures" / "crds"
SUFFIX = ".schema.json.gz"

# plural -> (kind, has the status subresource), as upstream declares them. Every CRD here is namespaced.
NAMES: dict[str, tuple[str, bool]] = {
    "inferenceservices": ("InferenceService", True),
    "servingruntimes": ("ServingRuntime", False),
    "inferencegraphs": ("InferenceGraph", True),
    "rayjobs": ("RayJob", True),
    "rayclusters": ("RayCluster", True),
    "milvuses": ("Milvus", True),
    "featurestores": ("FeatureStore", True),
}


@dataclass(frozen=True)
class VendoredCRD:
    group: str
    version: str
    plural: str
    kind: str
    status_subresource: bool
    schema: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    def definition(self) -> dict[str, Any]:
        """The apiextensions.k8s.io/v1 CustomResourceDefinition serving this one version."""
        version: dict[str, Any] = {
            "name": self.version,
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": self.schema},
        }
        if self.status_subresource:
            version["subresources"] = {"status": {}}
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": self.name},
            "spec": {
                "group": self.group,
                "scope": "Namespaced",
                "names": {
                    "plural": self.plural,
                    "singular": self.kind.lower(),
                    "kind": self.kind,
                    "listKind": f"{self.kind}List",
                },
                "versions": [version],
            },
        }


def vendored_crds(directory: Path = CRD_SCHEMAS) -> list[VendoredCRD]:
    """One VendoredCRD per schema file, sorted by file name. A schema whose plural NAMES does not know is an error:
    a newly vendored schema needs its kind here too."""
    crds = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        stem = path.name.removesuffix(SUFFIX)  # e.g. "ray.io_rayjobs.v1"
        group_plural, version = stem.rsplit(".", 1)
        group, plural = group_plural.split("_", 1)
        if plural not in NAMES:
            raise KeyError(f"{path.name}: add the kind of {plural!r} to NAMES in {__file__}")
        kind, status = NAMES[plural]
        schema = json.loads(gzip.decompress(path.read_bytes()))
        crds.append(VendoredCRD(group, version, plural, kind, status, schema))
    return crds
