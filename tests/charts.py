"""Renders and lints the Helm charts with the Helm SDK (helm-python-sdk, no helm binary).

Usage: charts.py CHARTS_DIR OUT_DIR

For each case, the chart is linted strictly with the case's values and rendered; the CRDs and
templates (not NOTES.txt) are written as one YAML stream to OUT_DIR/CASE.yaml, the notes to
OUT_DIR/CASE.notes. Values the schema or the templates must refuse are tried too. A JSON
report goes to stdout: each case's files, and each refusal's message.
"""

import json
import sys
from pathlib import Path

import helm_python as helm

FULL_OPERATOR = {
    "image": {"tag": "0.1.0-rc1"},
    "operator": {"replicas": 3, "podLabels": {"team": "platform"}},
    "dataplane": {
        "tunnelDomain": "tunnel.msp.example",
        "tunnelServiceType": "NodePort",
        "storageClass": "gp3",
        "metricsNamespace": "observability",
        # What terraform/modules/cluster passes.
        "nodeSelector": {"imgate.io/role": "dataplane"},
        "tunnelServiceAnnotations": {
            "service.beta.kubernetes.io/aws-load-balancer-type": "external",
            "service.beta.kubernetes.io/aws-load-balancer-attributes": "load_balancing.cross_zone.enabled=true",
        },
        "apiServerCIDRs": ["10.0.0.0/28", "fd00:10::/120"],
    },
    "telemetry": {"otlpEndpoint": "http://otel-collector.observability:4318"},
}

CONNECTOR = {
    "dataplane": "acme.tunnel.msp.example:4433",
    "enrollment": {"token": "imgate-token-for-the-test"},
    "httpConnect": {"enabled": True, "port": 8080},
    "forwards": [{"name": "xmpp", "port": 5222, "to": "xmpp.example.com:5222"}],
}

CASES = {
    # The defaults, with the one value that has none.
    "imgate-defaults": ("imgate", {"dataplane": {"apiServerCIDRs": ["172.18.0.2/32"]}}),
    "imgate-single": (
        "imgate",
        {"operator": {"replicas": 1}, "dataplane": {"apiServerCIDRs": ["172.18.0.2/32"]}},
    ),
    "imgate-full": ("imgate", FULL_OPERATOR),
    "connector-full": ("imgate-connector", CONNECTOR),
    "connector-secret": (
        "imgate-connector",
        {"dataplane": "[2001:db8::7]:4433", "serverName": "acme.tunnel.msp.example",
         "enrollment": {"existingSecret": "acme-token"}},
    ),
}

REFUSED = {
    "misspelt key": ("imgate", {"operator": {"replica": 3}}),
    "service type": ("imgate", {"dataplane": {"tunnelServiceType": "ClusterIP"}}),
    "tunnel domain": ("imgate", {"dataplane": {"tunnelDomain": "Not A Domain"}}),
    "api server range": ("imgate", {"dataplane": {"apiServerCIDRs": ["10.0.0.1"]}}),
    "no api server range": ("imgate", {}),
    "otlp endpoint": ("imgate", {"telemetry": {"otlpEndpoint": "otel-collector:4318"}}),
    "endpoint": ("imgate-connector", {"dataplane": "acme:tunnel", "enrollment": {"token": "t"}}),
    "no endpoint": ("imgate-connector", {"enrollment": {"token": "t"}}),
    "no token": ("imgate-connector", {"dataplane": "acme.example:4433"}),
    "no listener": (
        "imgate-connector",
        {"dataplane": "acme.example:4433", "enrollment": {"token": "t"},
         "socks": {"enabled": False, "port": 1080}},
    ),
}

NAMESPACE = "imgate-system"


def render(chart_dir: Path, values: dict) -> tuple[str, str]:
    chart = helm.Chart.load(chart_dir)
    rendered = chart.render(values, name="acme", namespace=NAMESPACE, is_install=True)
    documents = [crd["data"] for crd in chart.crds]
    notes = ""
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            notes = rendered[path]
        elif rendered[path].strip():
            documents.append(rendered[path])
    return "\n---\n".join(documents), notes


def lint(chart_dir: Path, values: dict) -> list[str]:
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    return problems + report["errors"]


def main() -> int:
    charts, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    report = {"cases": {}, "refused": {}}
    for case, (chart, values) in CASES.items():
        problems = lint(charts / chart, values)
        if problems:
            print(f"{case}: helm lint: {problems}", file=sys.stderr)
            return 1
        manifest, notes = render(charts / chart, values)
        (out / f"{case}.yaml").write_text(manifest)
        (out / f"{case}.notes").write_text(notes)
        report["cases"][case] = str(out / f"{case}.yaml")
    for case, (chart, values) in REFUSED.items():
        try:
            render(charts / chart, values)
        except helm.HelmError as error:
            report["refused"][case] = str(error)
        else:
            report["refused"][case] = None
    json.dump(report, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
