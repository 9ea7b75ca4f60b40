"""Evidence sources: the plain list of parsers and the dispatcher that picks one per file.

Add a format as one module with a ``SOURCE`` and one line in ``SOURCES``. Order matters:
the first source whose ``sniff`` accepts a file parses it, so specific formats come first.
"""

from __future__ import annotations

from deminer.sources import (
    archive_zip,
    auditd,
    auth_log,
    bundle,
    evtx,
    file_listing,
    netflow,
    pcap,
    pfirewall,
    registry_hive,
    suricata,
    task_xml,
    velociraptor,
    web_access,
    winevent_json,
    winevent_xml,
    zeek,
)
from deminer.sources.base import Source

SOURCES: tuple[Source, ...] = (
    bundle.SOURCE,
    registry_hive.SOURCE,
    evtx.SOURCE,
    pcap.SOURCE,
    winevent_xml.SOURCE,
    task_xml.SOURCE,
    velociraptor.SOURCE,  # a collection's EventLogs results look like Windows JSON
    archive_zip.SOURCE,  # winevent_json claims a zip of Windows JSON lines only
    winevent_json.SOURCE,
    zeek.SOURCE,  # Zeek TSV (#separator/#fields) and JSON lines
    suricata.SOURCE,  # eve.json
    pfirewall.SOURCE,  # W3C-style like IIS logs: claims only its own #Fields (src-ip dst-ip)
    auditd.SOURCE,  # type=… msg=audit(…) lines; before the syslog-shaped logs
    auth_log.SOURCE,
    web_access.SOURCE,
    netflow.SOURCE,  # header-driven flow CSV/JSON: after the specific formats
    # After winevent_json: Elastic-style JSON with file.path + file.size looks like a listing.
    file_listing.SOURCE,
)
