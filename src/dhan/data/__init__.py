"""From raw interaction logs to prepared datasets (``store``) and batches (``loader``).

Depends only on :mod:`dhan.schema`, :mod:`dhan.batch` and :mod:`dhan.errors`.
"""
