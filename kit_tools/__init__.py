"""Tooling of this repository, not part of the copy-me ``helpers`` package.

``run_notebooks`` (``make run``), ``translations`` (``make zh``: the Chinese edition) and ``firehose``
(the never-limiting server of notebook 04 and ``make bench``). The repository's editable install
(``make install``) provides it; a plain ``pip install`` of the kit does not.
"""
