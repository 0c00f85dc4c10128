"""What ``exbp check`` reports: whether a model can be explained, and why not."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

from ..graph_rules import rule_for
from .graph.loading import MAX_OPSET, MIN_OPSET
from .walk.methods import METHODS


@dataclass(frozen=True)
class CheckReport:
    opset: int
    input: tuple[str, Optional[tuple]]
    outputs: tuple[tuple[str, Optional[tuple]], ...]
    logits: tuple[str, Optional[tuple]]
    ops_with_rules: dict[str, int]                       # op type -> count in the canonical graph
    refused: tuple[tuple[str, str, str, bool], ...]       # (op type, node, reason, on the path)
    default_layer: str
    verdicts: dict[str, Optional[str]]                    # method -> why refused, None if it runs
    pixels: Optional[str]                                  # why maps at the input are refused
    input_layout: str = ""                                 # "NCHW", "NHWC": derived from the graph

    @property
    def explainable(self) -> bool:
        """Whether MWP runs at the default layer."""
        return self.verdicts["mwp"] is None

    def lines(self) -> list[str]:
        lines = [f"opset: {self.opset} (exbp supports {MIN_OPSET} to {MAX_OPSET})",
                 f"input: {self.input[0]} {shape_text(self.input[1])}"
                 + (f" {self.input_layout} (derived from the graph)" if self.input_layout else ""),
                 f"outputs: {', '.join(f'{name} {shape_text(shape)}' for name, shape in self.outputs)}",
                 f"logits: {self.logits[0]} {shape_text(self.logits[1])}",
                 "ops with rules: " + (', '.join(f'{op} ×{count}' for op, count in
                                                sorted(self.ops_with_rules.items())) or 'none')]
        for op_type, name, reason, on_path in self.refused:
            where = "on the input-to-logits path" if on_path else "off the path (harmless)"
            lines.append(f"refused: {op_type} {name!r} ({where}): {reason}")
        lines.append(f"default map layer: {self.default_layer}")
        for method, reason in self.verdicts.items():
            lines.append(f"{method} at the default layer: {'yes' if reason is None else 'no: ' + reason}")
        lines.append(f"maps at the input pixels: {'yes' if self.pixels is None else 'no: ' + self.pixels}")
        lines.append(f"explainable: {'yes' if self.explainable else 'no'}")
        return lines


def check_report(session) -> CheckReport:
    graph = session.graph
    shapes = graph.shapes
    counts = Counter(node.op_type for node in graph.nodes if rule_for(node))
    return CheckReport(
        opset=graph.opset, input=(graph.input_name, graph.input_shape),
        outputs=tuple((o.name, shapes.get(o.name)) for o in session.model.graph.output),
        logits=(session.logits, shapes.get(session.logits)), ops_with_rules=dict(counts),
        refused=tuple(session.unsupported_nodes()), default_layer=session.default_layer(),
        verdicts={name: session.refusal(None, method) for name, method in METHODS.items()},
        pixels=session.refusal(graph.input_name, METHODS["mwp"]),
        input_layout=getattr(session.catalogue.layout(graph.input_name), "letters", ""))


def shape_text(shape) -> str:
    if shape is None:
        return "(?)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
