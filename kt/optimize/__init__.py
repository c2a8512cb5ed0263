"""Optimize rules: which operator (and device) runs each module of a model.

A rule file is a YAML list applied in order to the module tree before the weights load;
for each module the first rule whose `match.name` regex matches it decides, and the
operator it names then owns the module's children too:

    - match: {name: "^model\\.layers\\..*\\.mlp\\.experts$"}
      replace: {op: moe_cpu, device: cpu, kwargs: {native: true}}

Every rule must match at least one module (a rule that matches nothing is a mistake in
the file, so it is reported rather than ignored), name a known operator, and that
operator must accept the module it matched. Errors are `OptimizeRuleError`, one line
naming the file, the rule and the problem.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from torch import nn

from kt.optimize.ops import OPS, DEVICES

RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_RULES = {"deepseek2": "deepseek-v3_cpu.yaml", "qwen3moe": "qwen3-moe_cpu.yaml"}  # by GGUF architecture


class OptimizeRuleError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    index: int
    pattern: re.Pattern
    op: str
    device: str
    kwargs: dict = field(default_factory=dict)


def load_rules(path: str | Path) -> list[Rule]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise OptimizeRuleError(f"{path}: cannot read rules: {e}".splitlines()[0]) from None
    if not isinstance(raw, list):
        raise OptimizeRuleError(f"{path}: expected a list of rules")
    rules = []
    for i, item in enumerate(raw, 1):
        where = f"{path}: rule {i}"
        try:
            pattern = re.compile(item["match"]["name"])
            replace = item["replace"]
            op, device, kwargs = replace["op"], replace.get("device", "cpu"), replace.get("kwargs") or {}
        except re.error as e:
            raise OptimizeRuleError(f"{where}: bad regex: {e}") from None
        except (KeyError, TypeError):
            raise OptimizeRuleError(f"{where}: expected {{match: {{name: REGEX}}, replace: {{op: OP, device: DEV, kwargs: {{}}}}}}") from None
        if op not in OPS:
            raise OptimizeRuleError(f"{where}: unknown op {op!r} (known: {', '.join(sorted(OPS))})")
        if device not in DEVICES:
            raise OptimizeRuleError(f"{where}: device {device!r} is not available (available: {', '.join(DEVICES)})")
        if not isinstance(kwargs, dict):
            raise OptimizeRuleError(f"{where}: kwargs must be a mapping")
        rules.append(Rule(i, pattern, op, device, kwargs))
    return rules


def apply_rules(model: nn.Module, rules: list[Rule], source: str | Path = "rules") -> dict[str, str]:
    """Configure the matched modules in place; returns {module name: op} for the record."""
    used = {rule.index: 0 for rule in rules}
    chosen = {}
    for name, module in model.named_modules():
        if any(name.startswith(owner + ".") for owner in chosen):
            continue  # a matched module's operator owns everything inside it
        rule = next((r for r in rules if r.pattern.search(name)), None)
        if rule is None:
            continue
        used[rule.index] += 1
        try:
            OPS[rule.op](module, **rule.kwargs)
        except TypeError as e:
            raise OptimizeRuleError(f"{source}: rule {rule.index}: op {rule.op} cannot take {name} "
                                    f"({type(module).__name__}): {e}") from None
        chosen[name] = rule.op
    unused = [i for i, n in used.items() if n == 0]
    if unused:
        r = rules[unused[0] - 1]
        raise OptimizeRuleError(f"{source}: rule {r.index} ({r.pattern.pattern!r}) matches no module of this model")
    return chosen


def rules_for(architecture: str, optimize_config: str | Path | None) -> tuple[list[Rule], str] | None:
    """The rules `optimize_config` names: a file, "auto" (kt's file for the architecture, if any), or None."""
    if optimize_config is None:
        return None
    if str(optimize_config) == "auto":
        if architecture not in DEFAULT_RULES:
            return None
        path = RULES_DIR / DEFAULT_RULES[architecture]
    else:
        path = Path(optimize_config)
    return load_rules(path), str(path)
