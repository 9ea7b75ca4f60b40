"""Build a seed case's evidence and truth: ``build(case_no, out_dir) -> Truth``.

``out_dir`` receives one folder per host (and ``sensor/`` for network evidence) plus
``truth.json``; the host trees the Linux bundles were collected from are built in a temporary
folder and removed. Run ``python -m deminer.scenarios.seed.build N OUT`` to write one case by hand.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from deminer.scenarios.seed import (
    case01_web_upload_eternalblue,
    case02_phishing_smb_brute,
    case03_poisoned_update,
    case04_eternalblue_services,
    case05_hospital_families,
    case06_consul_ansible,
    case07_systemdminer_frp,
    case08_rdp_redis_watchdog,
    case09_ssh_shared_password,
    case10_usb_wannamine,
)
from deminer.scenarios.seed.common import Truth

Builder = Callable[[Path, Path], Truth]
CASES: dict[int, Builder] = {
    1: case01_web_upload_eternalblue.build,
    2: case02_phishing_smb_brute.build,
    3: case03_poisoned_update.build,
    4: case04_eternalblue_services.build,
    5: case05_hospital_families.build,
    6: case06_consul_ansible.build,
    7: case07_systemdminer_frp.build,
    8: case08_rdp_redis_watchdog.build,
    9: case09_ssh_shared_password.build,
    10: case10_usb_wannamine.build,
}


def build(case_no: int, out_dir: Path) -> Truth:
    """Write case ``case_no``'s evidence under ``out_dir`` and return its checked truth."""
    try:
        builder = CASES[case_no]
    except KeyError:
        raise ValueError(f"no seed case {case_no} (have {sorted(CASES)})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"deminer-case{case_no:02d}-"))
    try:
        truth = builder(out_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    truth.check()
    truth.write(out_dir)
    return truth


if __name__ == "__main__":
    built = build(int(sys.argv[1]), Path(sys.argv[2]))
    print(f"case {built.case}: {len(built.infected)} infected, {len(built.clean)} clean, "
          f"{len(built.unknown)} unknown; truth in {Path(sys.argv[2]) / 'truth.json'}")
