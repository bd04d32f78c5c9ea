"""Parses Prometheus text (stdin) with the reference Python client's parser; prints the families as JSON.

Used by local/tests/metrics.rs: if the exposition is not valid Prometheus text, the parser raises and
the test fails.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = [
    {
        "name": family.name,
        "type": family.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    }
    for family in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
