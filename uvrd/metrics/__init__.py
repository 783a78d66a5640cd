"""Prometheus metrics: each daemon's own module defines what it counts (``processor``, ``uploader``,
``api``, with ``queues``, ``drain`` and ``dead_letters``), ``exposition`` serves them.

Conventions (prometheus_client's): every name starts ``uvrd_``; counters end ``_total``, times are
``_seconds`` histograms, sizes ``_bytes``; labels take a short fixed vocabulary, never free text: a
``reason`` is the typed outcome's ``cause`` (a word), not its sentence for the log; ``model`` a model
filename or an ensemble's label; ``device`` where the model runs, ``cuda`` or ``cpu``.  A metric is
created when its module is imported: the api names its multiprocess directory before that
(multiprocess.py says why).
"""
