"""Sigma rule support: Sigma YAML converted by pySigma into DuckDB SQL over ``events``.

    mapping.py      Sigma field names and log sources -> columns, data fields, WHERE clauses
    backend.py      the pySigma backend: detection conditions -> SQL expressions
    correlation.py  correlation rules (event_count, value_count, temporal, ...) -> window SQL
    loader.py       folders of rule files -> converted rules + problems with reasons
    run.py          run them over a case -> findings (``sigma_findings`` for the CLI)
    rules/          deminer's own Sigma pack for the miner kill chain
"""
