"""Renders and lints the chart with the Helm SDK (no helm binary).

    helm_render.py CHART OUT_DIR VALUES...

For each values file: lint (strict) and render, writing the manifests to
OUT_DIR/<values name>.yaml. Also checks that a few bad values are refused:
the schema and the `validate` template must keep saying no. Exits non-zero
on any finding.
"""

import pathlib
import sys

import helm_python as helm
import yaml

helm.disable_logging()


def render(chart, values):
    manifests = chart.render(values, name="fleet", namespace="fleet", is_install=True)
    return "\n---\n".join(
        text.strip()
        for path, text in sorted(manifests.items())
        if text.strip() and not path.endswith("NOTES.txt")
    )


def refused(chart, values, why):
    try:
        chart.validate_schema(values)
        render(chart, values)
    except helm.HelmError as err:
        print(f"  refused {why}: {' '.join(str(err).split())[:160]}")
        return str(err)
    sys.exit(f"the chart accepted {why}: {values}")


def main():
    chart_dir, out_dir, *values_files = sys.argv[1:]
    chart = helm.Chart.load(chart_dir)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for values_file in values_files:
        values = yaml.safe_load(pathlib.Path(values_file).read_text()) or {}
        report = helm.lint(chart_dir, values, strict=True)
        for message in report.get("messages", []):
            if message.get("severity", 0) >= 2:
                print(f"{values_file}: lint: {message}", file=sys.stderr)
                failed = True
        for error in report.get("errors") or []:
            print(f"{values_file}: lint: {error}", file=sys.stderr)
            failed = True
        chart.validate_schema(values)
        name = pathlib.Path(values_file).name.removesuffix(".yaml")
        (out / f"{name}.yaml").write_text(render(chart, values) + "\n")
        print(f"rendered {values_file}")
    # What must stay refused.
    placeholders = {}
    refused(chart, placeholders, "placeholder secrets")
    refused(chart, {"secrets": {"allowPlaceholders": True}, "activeSlot": "purple"}, "an unknown slot")
    refused(chart, {"secrets": {"allowPlaceholders": True}, "activeSlot": "green"}, "a live slot without a tag")
    refused(
        chart,
        {"secrets": {"allowPlaceholders": True}, "components": {"auth": {"hpa": {"minReplicas": 5, "maxReplicas": 2}}}},
        "an autoscaler whose minimum is above its maximum",
    )
    refused(
        chart,
        {"secrets": {"allowPlaceholders": True}, "components": {"users": {"pdb": {"minAvailable": 2}}}},
        "a disruption budget no eviction could meet",
    )
    refused(chart, {"secrets": {"allowPlaceholders": True}, "ingress": {"enabled": True}}, "an Ingress without a host")
    refused(
        chart,
        {"secrets": {"allowPlaceholders": True}, "securityContext": {"allowPrivilegeEscalation": True}},
        "privilege escalation",
    )
    print("bad values refused: 7 of 7")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
