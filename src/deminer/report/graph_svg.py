"""The infection graph as inline SVG: layered by infection time, drawn offline, no JS library.

Layout (a small Sugiyama-style layering)::

      layer 0            layer 1              layer 2
    +-----------+  ssh_key 03-01 10:22  +-----------+
    | web-01  * |---------------------->| db-01     |---> ...
    +-----------+                       +-----------+

* A node's order is its infection time (patient zero first); an edge that goes forward in
  that order sets ``layer(dst) >= layer(src) + 1`` (longest path), so patient zero is left
  and edges run left to right. An edge against the order (clock skew, re-infection) is drawn
  dashed and does not move layers.
* Within a layer, nodes are ordered by time, then a few barycenter sweeps pull neighbours
  level to cut crossings.
* Hosts are coloured by verdict; edge labels are technique + time, with the reason in a
  tooltip; each node links to its host section (``#host-<id>``).
* Large outbreaks stay usable: only hosts that are infected, suspicious or on an edge are
  drawn, at most ``max_nodes`` of them (earliest first); the rest become a "+N more" node,
  and uninvolved clean/unknown hosts become one count box per verdict. ``graph.json`` has all.

Every string from the evidence goes through ``esc``: the SVG is parsed as HTML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
from collections import defaultdict
from collections.abc import Sequence

from deminer.report.exports import EdgeView, HostView, iso
from deminer.textsafe import clean

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 160, 46, 180, 26, 20
MAX_LABELLED_EDGES = 120   # beyond this, labels would pile up: the tooltip keeps them
MAX_STACKED = 3            # labels stacked above one target; the tooltip has the rest
# Characters ``textsafe.clean`` leaves but that reorder or hide text (Arabic letter mark,
# BOM, line/paragraph separators).
_EXTRA_UNSAFE = re.compile("[\u061c\ufeff\u2028\u2029]")


def esc(value: object, limit: int | None = 300) -> str:
    """Evidence text made inert for HTML/SVG: controls and bidi shown as escapes, markup
    characters as entities, cut to ``limit``."""
    text = _EXTRA_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", clean(value, limit))
    return html.escape(text, quote=True)


def host_anchor(host: str) -> str:
    """A safe, stable HTML id for a host whatever its name holds."""
    return "host-" + hashlib.sha256(host.encode("utf-8", "backslashreplace")).hexdigest()[:12]


def short_time(ts: dt.datetime | None) -> str:
    return ts.strftime("%m-%d %H:%M") if ts else "time unknown"


def _select(hosts: Sequence[HostView], edges: Sequence[EdgeView], max_nodes: int
            ) -> tuple[list[HostView], dict[str, int]]:
    """The hosts to draw, earliest first, and the counts of those left out per reason."""
    on_edge = {e.src for e in edges} | {e.dst for e in edges}
    # Without an infection time, a host is placed by when it was first reached (else first
    # reached out): the earliest edge into it says when it was infected at the latest.
    into: dict[str, dt.datetime] = {}
    out_of: dict[str, dt.datetime] = {}
    for e in edges:
        if e.ts is not None and e.src != e.dst:
            into[e.dst] = min(into.get(e.dst, e.ts), e.ts)
            out_of[e.src] = min(out_of.get(e.src, e.ts), e.ts)
    first_edge = {**out_of, **into}
    involved = [h for h in hosts if h.verdict in ("infected", "suspicious") or h.host in on_edge]
    far = dt.datetime.max
    involved.sort(key=lambda h: (not h.patient_zero, h.infected_at or first_edge.get(h.host) or far,
                                 h.host))
    left: dict[str, int] = defaultdict(int)
    for h in hosts:
        if h.host not in on_edge and h.verdict in ("clean", "unknown"):
            left[h.verdict] += 1
    if len(involved) > max_nodes:
        left["more"] = len(involved) - max_nodes
    return involved[:max_nodes], dict(left)


def _layers(nodes: list[HostView], edges: list[EdgeView]) -> tuple[dict[str, int], set[int]]:
    """Layer per host (longest path over forward edges) and the indexes of backward edges."""
    order = {h.host: i for i, h in enumerate(nodes)}
    incoming: dict[str, list[str]] = defaultdict(list)
    backward: set[int] = set()
    for i, e in enumerate(edges):
        if order[e.src] < order[e.dst]:
            incoming[e.dst].append(e.src)
        else:
            backward.add(i)
    layer: dict[str, int] = {}
    for h in nodes:            # nodes are in order, so every forward source is placed already
        layer[h.host] = max((layer[s] + 1 for s in incoming[h.host]), default=0)
    return layer, backward


def _positions(nodes: list[HostView], edges: list[EdgeView], layer: dict[str, int]
               ) -> dict[str, tuple[int, int]]:
    columns: dict[int, list[str]] = defaultdict(list)
    for h in nodes:
        columns[layer[h.host]].append(h.host)
    ins: dict[str, list[str]] = defaultdict(list)
    outs: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        ins[e.dst].append(e.src)
        outs[e.src].append(e.dst)
    index = {h: i for col in columns.values() for i, h in enumerate(col)}

    def sweep(keys: list[int], nbrs: dict[str, list[str]]) -> None:
        for k in keys:
            col = columns[k]
            bary = {h: (sum(index[n] for n in nbrs[h] if n in index) / len(nbrs[h])
                        if nbrs[h] else index[h]) for h in col}
            col.sort(key=lambda h: (bary[h], index[h]))
            index.update({h: i for i, h in enumerate(col)})

    keys = sorted(columns)
    for _ in range(3):
        sweep(keys[1:], ins)
        sweep(list(reversed(keys[:-1])), outs)
    return {h: (MARGIN + k * (NODE_W + GAP_X), MARGIN + 18 + i * (NODE_H + GAP_Y))
            for k, col in columns.items() for i, h in enumerate(col)}


def _node(h: HostView, x: int, y: int) -> str:
    label = esc(h.host, 19)
    when = f"infected {short_time(h.infected_at)}" if h.infected_at else h.verdict
    pz = ' patient-zero' if h.patient_zero else ''
    star = '<tspan class="pz">\u2605 </tspan>' if h.patient_zero else ''
    tip = esc(f"{h.host} \u2014 {h.verdict}" + (f", infected {iso(h.infected_at)}" if h.infected_at else "")
              + (" \u2014 patient zero" if h.patient_zero else "")
              + (f" \u2014 {h.reason}" if h.reason else ""), 600)
    return (f'<a href="#{host_anchor(h.host)}" class="node {h.verdict}{pz}" data-host="{esc(h.host, 300)}">'
            f'<title>{tip}</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="{x + 10}" y="{y + 19}" class="name">{star}{label}</text>'
            f'<text x="{x + 10}" y="{y + 36}" class="when">{esc(when, 40)}</text></a>')


def _edge(e: EdgeView, a: tuple[int, int], b: tuple[int, int], back: bool, labelled: bool,
          nth: int) -> str:
    x1, y1 = a[0] + NODE_W, a[1] + NODE_H // 2
    x2, y2 = b[0], b[1] + NODE_H // 2
    if back:                           # loop out to the right and back in from the left
        c1, c2 = (x1 + 80, y1 - 60), (x2 - 80, y2 - 60)
    else:
        mid = (x1 + x2) // 2
        c1, c2 = (mid, y1), (mid, y2)
    path = f"M{x1},{y1} C{c1[0]},{c1[1]} {c2[0]},{c2[1]} {x2},{y2}"
    if back:                           # on the loop's top (bezier at t = 0.5)
        lx, ly, anchor = (x1 + 3 * c1[0] + 3 * c2[0] + x2) // 8, (y1 + 3 * c1[1] + 3 * c2[1] + y2) // 8, ""
    else:
        # Just above the arrow into the target, where edges from one source have fanned out
        # a row apart; edges into the same target stack upwards.
        lx, ly, anchor = x2 - 8, y2 - 6 - 13 * nth, " end"
    label = f"{clean(e.technique, 14)} \u00b7 {short_time(e.ts)}"
    tip = (f"{e.src} \u2192 {e.dst}: {e.technique} at {iso(e.ts) or 'unknown time'}"
           + (f" ({e.confidence} confidence)" if e.confidence else "")
           + (f" \u2014 {e.reason}" if e.reason else "")
           + (" \u2014 against infection order" if back else ""))
    cls = "edge back" if back else "edge"
    if e.confidence:
        cls += f" conf-{'low' if str(e.confidence).lower() == 'low' else 'other'}"
    text = (f'<text x="{lx}" y="{ly}" class="elabel{anchor}">{esc(label, 60)}</text>'
            if labelled and nth < MAX_STACKED else "")
    return (f'<g class="{cls}" data-src="{esc(e.src, 300)}" data-dst="{esc(e.dst, 300)}" '
            f'data-technique="{esc(e.technique, 200)}"><title>{esc(tip, 800)}</title>'
            f'<path d="{path}" marker-end="url(#arrow)"/>{text}</g>')


def render_graph(hosts: Sequence[HostView], edges: Sequence[EdgeView], max_nodes: int = 150) -> str:
    """The ``<svg>`` element for the report (an empty-state note when nothing is involved)."""
    nodes, left = _select(hosts, edges, max_nodes)
    shown = {h.host for h in nodes}
    drawn = [e for e in edges if e.src in shown and e.dst in shown]
    to_more: dict[str, int] = defaultdict(int)       # shown source -> hidden targets
    for e in edges:
        if e.src in shown and e.dst not in shown:
            to_more[e.src] += 1
    # Hosts on no edge that are not infected (suspicious ones) are no entry point: they go in
    # rows under the graph, not in the first column next to patient zero.
    linked = {e.src for e in drawn} | {e.dst for e in drawn}
    loose = [h for h in nodes if h.host not in linked and h.verdict != "infected"]
    layered = [h for h in nodes if h.host in linked or h.verdict == "infected"]
    layer, backward = _layers(layered, drawn)
    pos = _positions(layered, drawn, layer)
    parts: list[str] = []
    labelled = len(drawn) <= MAX_LABELLED_EDGES
    into: dict[str, int] = defaultdict(int)
    for i, e in enumerate(drawn):
        parts.append(_edge(e, pos[e.src], pos[e.dst], i in backward, labelled, into[e.dst]))
        into[e.dst] += 1
    width = MARGIN * 2 + (max(layer.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = max((y for _, y in pos.values()), default=MARGIN) + NODE_H + MARGIN
    extra: list[str] = []
    if loose:
        per_row = max(4, (width - MARGIN) // (NODE_W + 20))
        width = max(width, MARGIN + per_row * (NODE_W + 20))
        extra.append(f'<text x="{MARGIN}" y="{height + 12}" class="layer">not linked to the outbreak</text>')
        for i, h in enumerate(loose):
            row, col = divmod(i, per_row)
            pos[h.host] = (MARGIN + col * (NODE_W + 20), height + 24 + row * (NODE_H + GAP_Y))
        height = pos[loose[-1].host][1] + NODE_H + MARGIN
    if left.get("more"):
        mx, my = width + 40, MARGIN + 18
        extra.append(f'<g class="more" data-count="{left["more"]}"><rect x="{mx}" y="{my}" '
                     f'width="{NODE_W}" height="{NODE_H}" rx="7"/><text x="{mx + 10}" y="{my + 19}">'
                     f'+{left["more"]} more hosts</text><text x="{mx + 10}" y="{my + 36}" class="when">'
                     'listed under Hosts, all in graph.json</text></g>')
        for src, n in sorted(to_more.items()):
            sx, sy = pos[src]
            extra.append(f'<g class="edge to-more"><title>{n} edge(s) to hosts not drawn</title>'
                         f'<path d="M{sx + NODE_W},{sy + NODE_H // 2} L{mx},{my + NODE_H // 2}" '
                         'marker-end="url(#arrow)"/></g>')
        width += NODE_W + 60
    boxes = [(v, left[v]) for v in ("clean", "unknown") if left.get(v)]
    box_w = NODE_W + 70
    for i, (verdict, n) in enumerate(boxes):
        bx, by = MARGIN + i * (box_w + 20), height + 10
        extra.append(f'<g class="summary-box {verdict}" data-count="{n}"><rect x="{bx}" y="{by}" '
                     f'width="{box_w}" height="{NODE_H - 12}" rx="7"/><text x="{bx + 10}" y="{by + 21}">'
                     f'{n} {verdict} host{"s" if n != 1 else ""} not on the graph</text></g>')
    if boxes:
        height += NODE_H + 10
        width = max(width, MARGIN + len(boxes) * (box_w + 20))
    header = "".join(f'<text x="{MARGIN + k * (NODE_W + GAP_X)}" y="{MARGIN + 6}" class="layer">'
                     f'{"first" if k == 0 else f"step {k}"}</text>'
                     for k in range(max(layer.values(), default=-1) + 1))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" role="img" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" aria-label="Infection graph: '
            f'{len(nodes)} hosts, {len(drawn)} edges">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
            f'{header}{"".join(parts)}{"".join(_node(h, *pos[h.host]) for h in nodes)}'
            f'{"".join(extra)}</svg>')
