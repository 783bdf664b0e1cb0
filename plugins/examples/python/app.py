"""pii-email: a Sluice guardrail in Python (componentize-py).

Fails a request (or response) whose text contains an email address, or, with
{"redact": true}, rewrites every address to `mask`. Configuration:

    {"redact": false, "mask": "[EMAIL]"}
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import checks
from wit_world.imports import types

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def parse(config: str) -> dict:
    try:
        value = json.loads(config or "{}")
    except ValueError as e:
        raise Err(types.Error_InvalidConfig(f"not JSON: {e}"))
    if not isinstance(value, dict):
        raise Err(types.Error_InvalidConfig("expected an object"))
    unknown = set(value) - {"redact", "mask"}
    if unknown:
        raise Err(types.Error_InvalidConfig(f"unknown fields: {', '.join(sorted(unknown))}"))
    if not isinstance(value.get("redact", False), bool):
        raise Err(types.Error_InvalidConfig("`redact` must be true or false"))
    return value


class Meta(exports.Meta):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="pii-email",
            version="0.1.0",
            kind=types.Kind.GUARDRAIL,
            description="Fails or redacts email addresses (Python)",
            config_schema='{"type":"object","properties":{"redact":{"type":"boolean"},"mask":{"type":"string"}}}',
            wants_body=False,
        )

    def validate_config(self, config: str) -> None:
        parse(config)


class Checks(exports.Checks):
    def check(self, config: str, input: checks.CheckInput) -> checks.Verdict:
        settings = parse(config)
        found = [m for s in input.segments for m in EMAIL.findall(s.text)]
        if not found:
            return checks.Verdict(checks.Outcome_Pass(), None, None)
        if settings.get("redact"):
            mask = settings.get("mask", "[EMAIL]")
            segments = [types.Segment(s.role, EMAIL.sub(mask, s.text)) for s in input.segments]
            return checks.Verdict(checks.Outcome_Rewrite(segments), None, None)
        reason = f"the text contains {len(found)} email address(es)"
        return checks.Verdict(
            checks.Outcome_Fail(checks.Failure(reason, False)),
            1.0,
            json.dumps({"count": len(found)}),
        )
