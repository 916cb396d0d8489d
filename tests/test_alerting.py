"""The Prometheus alerts and the Grafana dashboard shipped in ``packaging/``.

promtool checks and unit-tests the rules; the metric names the rules and the
dashboard query must be ones :mod:`hyperwheel.metrics` really exports, so a
renamed metric cannot leave an alert that silently never fires.
"""

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.metrics import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "packaging" / "prometheus"
RULES = RULES_DIR / "hyperwheel.rules.yml"
RULE_TESTS = RULES_DIR / "hyperwheel.rules.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "hyperwheel-dashboard.json"

METRIC_NAME = re.compile(r"\bhyperwheel_[a-z0-9_]+")
GRAFANA_VARIABLE = re.compile(r"\$__\w+")
GRID_COLUMNS = 24

# A labelled metric has no samples until its first child exists, so the
# names it will expose come from its type; prometheus_client's suffixes.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
    "summary": ("", "_count", "_sum", "_created"),
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in the rules folder; fail, not skip, when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: install the Debian package 'prometheus' "
            "(scripts/setup does)",
            pytrace=False,
        )

    return subprocess.run(
        [path, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def exported_names() -> set[str]:
    """Every sample name the service's registry exposes or will expose."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))

    return names


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())

    return document


def panels() -> list[dict[str, Any]]:
    """All panels, including those inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))

    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL expression) for every dashboard target."""
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel.get("targets", [])
    ]


def test_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rules file."""
    result = promtool("check", "rules", RULES.name)

    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    """Every alert fires when its unit tests say, with the text they expect."""
    result = promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_name_only_exported_metrics() -> None:
    """Every hyperwheel_* name in the rules file is one the service exports."""
    referenced = set(METRIC_NAME.findall(RULES.read_text()))

    unknown = referenced - exported_names()

    assert referenced, "no hyperwheel_* name found in the rules file"
    assert not unknown, f"rules name metrics the service lacks: {sorted(unknown)}"


def test_dashboard_names_only_exported_metrics() -> None:
    """Every hyperwheel_* name in a dashboard query is one the service exports."""
    referenced = {
        name for _, expr in dashboard_queries() for name in METRIC_NAME.findall(expr)
    }

    unknown = referenced - exported_names()

    assert referenced, "no hyperwheel_* name found in the dashboard's queries"
    assert not unknown, f"dashboard queries unknown metrics: {sorted(unknown)}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query once Grafana's $__ variables are set."""
    queries = dashboard_queries()
    rules = [
        {"record": f"dashboard_query_{index}", "expr": GRAFANA_VARIABLE.sub("5m", expr)}
        for index, (_, expr) in enumerate(queries)
    ]
    # JSON is YAML, so promtool reads this without a YAML writer here.
    checked = tmp_path / "dashboard.rules.yml"
    checked.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = promtool("check", "rules", str(checked))

    where = "\n".join(
        f"dashboard_query_{index} is {name}" for index, (name, _) in enumerate(queries)
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}{where}"


def test_dashboard_is_json_with_unique_panel_ids() -> None:
    """The dashboard parses, is the one the docs name, and no two panels share an id."""
    document = dashboard()
    ids = [panel["id"] for panel in panels()]

    assert (document["uid"], document["title"]) == ("hyperwheel", "hyperwheel")
    assert document["schemaVersion"] == 39
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"


def test_dashboard_queries_use_the_datasource_variable() -> None:
    """Every panel and target queries the ${datasource} chosen at import."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    wrong = [
        panel["title"]
        for panel in panels()
        if "targets" in panel
        for source in [panel, *panel["targets"]]
        if source.get("datasource", {}).get("uid") != "${datasource}"
    ]

    assert variables["datasource"]["query"] == "prometheus"
    assert not wrong, f"panels not on ${{datasource}}: {sorted(set(wrong))}"


def test_dashboard_panels_fit_the_grid_without_overlap() -> None:
    """Panels stay inside the 24 columns and no two cover the same cell."""
    boxes = [(panel["title"], panel["gridPos"]) for panel in panels()]

    too_wide = [title for title, b in boxes if b["x"] + b["w"] > GRID_COLUMNS]
    overlapping = [
        (first, second)
        for (first, a), (second, b) in itertools.combinations(boxes, 2)
        if a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    ]

    assert not too_wide, f"panels past column {GRID_COLUMNS}: {too_wide}"
    assert not overlapping, f"overlapping panels: {overlapping}"
