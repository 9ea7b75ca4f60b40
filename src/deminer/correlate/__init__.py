"""Correlate: the outbreak picture across hosts, after ``detect``.

    from deminer.correlate import correlate, write_timeline
    outbreak = correlate(case)          # fills host_verdicts, infection_edges, host_aliases
    write_timeline(case, case.dir)      # timeline.jsonl + timeline.csv (Timesketch)

Modules: ``identity`` (aliases), ``facts`` (findings as values), ``signs`` (what a finding
says about a host), ``coverage`` (evidence per host, clock skew), ``verdict``, ``edges`` and
``graph`` (who infected whom), ``patient_zero``, ``risk`` (blast radius), ``timeline``, ``run``.
Every decision carries a one-sentence reason naming the findings (by ``findings.id``) behind it.

``Outbreak`` (returned by ``correlate``):

    verdicts      list[HostVerdict], one per host, sorted by host id
    edges         list[Edge], sorted by time
    patient_zero  list[str]: the earliest infected host(s) with no inbound edge
    entry_vector  patient zero's entry: web_exploit | service_rce | brute_force | phishing |
                  poisoned_update | usb | unknown
    entries       dict host -> Entry(vector, ts, reason, findings) for every root host
                  (infected, no inbound edge), patient zero included
    explanations  sentences for the report: patient zero and why, other entry points, the
                  counts, clock-skew notes, identity notes (names kept apart and why)
    rejected      candidate edges that were not kept, each with why
    aliases       alias -> canonical host id (also the ``host_aliases`` table)

Tables (columns in ``model.py``):

``host_verdicts`` — one row per canonical host (every host named anywhere in the case, plus
internal addresses infected hosts reached on worm ports):
    verdict             infected | suspicious | clean | unknown (see ``verdict.py``); a host
                        with missing evidence is never clean
    infected_at         earliest trustworthy compromise time, on the host's own clock (naive UTC)
    first_finding       id of the finding that dated it (NULL for a raw event: LastBackup)
    reason              one sentence naming finding ids
    missing             "; "-joined: no host collection, no process list, no Security log, no
                        Sysmon log, no auth log, no patch list, only network sightings, only web
                        access logs, process starts logged without command lines, evidence gap: …
    clock_skew_seconds  the host clock's measured offset (host minus reference); NULL if none
    patient_zero        true for patient zero
    entry_vector        for root hosts the vector above; "lateral" for infected hosts with an
                        inbound edge; NULL otherwise
    at_risk             "; "-joined short reasons (reachable from infected X on port 445, named
                        in infected X's ansible_inventory, has account root guessed on X,
                        no MS17-010 update…, targeted: …)

``infection_edges`` — one row per (src, dst): the technique that best explains it (the others
the evidence showed between the two are named in ``reason``):
    src_host, dst_host  canonical host ids
    technique           ssh_brute_force | rdp_brute_force | smb_brute_force | windows_brute_force |
                        eternalblue | worm_fanout | psexec_service | remote_task | wmi_exec |
                        admin_share_exec | pass_the_hash | redis_rce | consul_rce | hadoop_rce |
                        jenkins_rce | docker_api_rce | web_exploit | webshell | ssh_key |
                        orchestration_push | shared_credentials | credential_reuse
    ts                  when it happened (for ssh_key/orchestration_push without a logon: the
                        target's infection time)
    attack              ATT&CK technique ids
    confidence          high | medium | low
    reason              one sentence; findings: the finding ids behind it

``host_aliases(alias, host, reason)`` — every name or address seen for a host -> canonical id.
Join any host column through it: ``coalesce(a.host, f.host)`` from
``findings f LEFT JOIN host_aliases a ON a.alias = f.host``.
"""

from deminer.correlate.run import Outbreak, correlate
from deminer.correlate.timeline import write_timeline

__all__ = ["Outbreak", "correlate", "write_timeline"]
