#!/usr/bin/env python3
"""Regenerate sandbox/openapi/definitions.json: the Kubernetes v1.32 OpenAPI v2 definitions of
the kinds the sandbox serves (and every definition they reference), nothing else.

Source: the upstream Kubernetes v1.32.0 `api/openapi-spec/swagger.json` definitions as shipped,
converted to JSON Schema, by the maintained PyPI package `kubernetes-validate` (file
`kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json`). That conversion
(openapi2jsonschema with `--kubernetes`) is mechanical and is undone here, so the output is the
upstream OpenAPI v2 text again:
  - `"type": [T, "null"]` (added for optional fields)   -> `"type": T`
  - `"$ref": "#/$defs/N"`                                -> `"$ref": "#/definitions/N"`
  - `"enum": [...]` on `apiVersion` / `kind` of a kind (added from its group-version-kind) -> dropped
  - IntOrString and Quantity, replaced by `oneOf` [string, integer|number] -> their OpenAPI
    form: `{"type": "string", "format": "int-or-string"}` and `{"type": "string"}` (their
    type-level descriptions are not in the source; field descriptions are).
Everything else (descriptions, `required`, `format`, `x-kubernetes-group-version-kind`,
`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`, `x-kubernetes-list-*`,
`x-kubernetes-map-type`, `x-kubernetes-unions`) is kept as upstream wrote it.

Usage (from the repository root; needs pip and network access to PyPI):
    python3 sandbox/openapi/generate.py            # downloads kubernetes-validate==1.37.0
    python3 sandbox/openapi/generate.py WHEEL.whl  # or uses a wheel you already have
When the sandbox serves a new kind, add it to KINDS below and rerun; the sandbox's unit test
`openapi_schemas::tests::every_served_kind_has_a_schema` fails until you do.
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "kubernetes-validate==1.37.0"
MEMBER = "kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json"
OUT = pathlib.Path(__file__).with_name("definitions.json")

# (group, version, kind) of every kind in sandbox/src/discovery.rs RESOURCES.
KINDS = [
    ("", "v1", k)
    for k in [
        "Namespace", "Pod", "PodTemplate", "ReplicationController", "ConfigMap", "Secret",
        "Service", "ServiceAccount", "Event", "Endpoints",
    ]
] + [
    ("apps", "v1", k) for k in ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"]
] + [
    ("batch", "v1", k) for k in ["Job", "CronJob"]
] + [
    ("discovery.k8s.io", "v1", "EndpointSlice"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
] + [
    ("rbac.authorization.k8s.io", "v1", k)
    for k in ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
] + [
    ("authentication.k8s.io", "v1", "SelfSubjectReview"),
] + [
    ("authorization.k8s.io", "v1", k)
    for k in [
        "LocalSubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview",
        "SubjectAccessReview",
    ]
]
# Referenced by the served PATCH operations' request bodies.
EXTRA = ["io.k8s.apimachinery.pkg.apis.meta.v1.Patch"]
SCALARS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


def load(argv):
    if len(argv) > 1:
        wheel = pathlib.Path(argv[1])
    else:
        tmp = pathlib.Path(tempfile.mkdtemp())
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp), PACKAGE],
            check=True,
        )
        wheel = next(tmp.glob("kubernetes_validate-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        return json.loads(z.read(MEMBER))["$defs"]


def schema(s):
    """Undo the JSON Schema conversion in one schema and everything below it."""
    out = {}
    for k, v in s.items():
        if k == "type" and isinstance(v, list):
            rest = [t for t in v if t != "null"]
            assert len(rest) == 1, v
            v = rest[0]
        elif k == "$ref":
            assert v.startswith("#/$defs/"), v
            v = "#/definitions/" + v[len("#/$defs/"):]
        elif k == "properties":
            v = {name: schema(p) for name, p in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            v = schema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            raise SystemExit(f"unexpected {k}: {s}")
        out[k] = v
    return out


def definition(name, s):
    if name in SCALARS:
        return dict(SCALARS[name])
    d = schema(s)
    if "x-kubernetes-group-version-kind" in d:
        for p in ("apiVersion", "kind"):
            d.get("properties", {}).get(p, {}).pop("enum", None)
    return d


def refs(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "$ref":
                yield v.rsplit("/", 1)[-1]
            else:
                yield from refs(v)
    elif isinstance(o, list):
        for v in o:
            yield from refs(v)


def main(argv):
    defs = {n: definition(n, s) for n, s in load(argv).items()}
    roots = list(EXTRA)
    for gvk in KINDS:
        found = [
            n for n, d in defs.items()
            if any((g["group"], g["version"], g["kind"]) == gvk
                   for g in d.get("x-kubernetes-group-version-kind", []))
        ]
        assert len(found) == 1, (gvk, found)
        roots += found
    keep, stack = set(), roots
    while stack:
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack.extend(refs(defs[n]))
    doc = {
        "x-source": {
            "kubernetes": "v1.32.0 api/openapi-spec/swagger.json (definitions only)",
            "via": f"PyPI {PACKAGE}, {MEMBER}",
            "generator": "sandbox/openapi/generate.py",
        },
        "definitions": {n: defs[n] for n in sorted(keep)},
    }
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(keep)} definitions, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv)
