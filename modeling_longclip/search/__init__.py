"""Photo search, the package's second main job: index a photo folder with any model this package writes (or a stock
CLIP / SigLIP folder) and search it with paragraph-long texts or photos.

- `PhotoIndex` (index.py): the Python API: `build`, `open`, `update`, `search`, `resolve`, `build_ann`;
- `longclip-search` (cli.py): `index`, `query`, `ann`, `info`;
- storage.py says how an index lives on disk, indexer.py how a run (one process or many) builds it, ann.py how the
  FAISS index is chosen, tuned and kept current, fingerprint.py what identifies the model.
"""

from __future__ import annotations

from .index import LongQueryWarning, PhotoIndex, SearchHit
from .indexer import IndexReport
from .storage import SearchIndexError

__all__ = ["IndexReport", "LongQueryWarning", "PhotoIndex", "SearchHit", "SearchIndexError"]
