"""Renders k8s/ from the Helm chart, so that the chart stays the one source.

    python k8s/render.py [OUT_DIR]     (default: k8s, in place)

Writes base/fleet.yaml (the production set, from k8s/values.yaml) and
overlays/prometheus-operator/monitoring.yaml (its ServiceMonitor and
PrometheusRule). Helm's own marks go: hooks become plain objects (the
migration Job), and the labels name no chart. Needs the Helm SDK
(`pip install helm-python-sdk pyyaml`).
"""

import pathlib
import sys

import helm_python as helm
import yaml

helm.disable_logging()
ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = "# Rendered from helm/fleet with k8s/values.yaml by k8s/render.py: do not edit.\n"
HELM_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")


def objects(values):
    chart = helm.Chart.load(str(ROOT / "helm/fleet"))
    rendered = chart.render(values, name="fleet", namespace="fleet", is_install=True)
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield doc


def plain(doc):
    meta = doc.get("metadata", {})
    for label in HELM_LABELS:
        meta.get("labels", {}).pop(label, None)
    annotations = meta.get("annotations", {})
    for key in [k for k in annotations if k.startswith("helm.sh/")]:
        del annotations[key]
    if not annotations:
        meta.pop("annotations", None)
    # A plain Job runs once; its name carries no revision to clash with.
    if doc["kind"] == "Job":
        doc["spec"].pop("ttlSecondsAfterFinished", None)
    return doc


def dump(docs):
    return HEADER + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=120)


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "k8s"
    values = yaml.safe_load((ROOT / "k8s/values.yaml").read_text())
    base = [plain(d) for d in objects(values)]
    with_monitoring = dict(values, monitoring={"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    crds = [plain(d) for d in objects(with_monitoring) if d["apiVersion"].startswith("monitoring.coreos.com/")]
    (out / "base").mkdir(parents=True, exist_ok=True)
    (out / "overlays/prometheus-operator").mkdir(parents=True, exist_ok=True)
    (out / "base/fleet.yaml").write_text(dump(base))
    (out / "overlays/prometheus-operator/monitoring.yaml").write_text(dump(crds))


if __name__ == "__main__":
    main()
