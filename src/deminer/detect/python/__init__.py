"""Python detectors: the plain registry that rule files name with ``detector: <name>``.

A detector is ``detect(case, rule) -> list[Finding]`` for logic that SQL does badly
(file scanning, decoding, graph walks). Add one module per detector and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from deminer.detect.python import base64_hidden, beaconing, yara_scan

if TYPE_CHECKING:
    from deminer.case import Case
    from deminer.detect.finding import Finding
    from deminer.detect.rules import Rule

Detector = Callable[["Case", "Rule"], list["Finding"]]

DETECTORS: dict[str, Detector] = {
    "yara_scan": yara_scan.detect,
    "base64_hidden": base64_hidden.detect,
    "beaconing": beaconing.detect,
}
