"""Multilingual semantic image search, an application of the library: index a folder, a CSV/TSV or WebDataset
shards once with any model open_mclip loads, keep the index current (only new and changed images are embedded, a
killed run resumes), and search it with text in any language, images, or both, from Python, the command line
(`python -m open_mclip.search`) or a web page (`serve`). docs/search.md has the usage and the index format.

    from open_mclip.search import build_index, SearchIndex
    build_index("photos/", "photos.idx", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    for hit in SearchIndex("photos.idx").search('"at school" + class.jpg', k=10, lang="hi"):
        print(hit.score, hit.file)

The library core never imports this package; FastAPI, uvicorn and faiss are imported only when used.
"""

from .encoder import Encoder, language_token
from .indexer import ANN_THRESHOLD, IndexStats, build_index
from .model_spec import ModelMismatchError, ModelSpec
from .query import Filters, Term, parse_date, parse_query
from .searcher import Result, SearchIndex
from .sources import IMAGE_EXTENSIONS
from .store import CorruptIndexError, IndexStore

__all__ = [
    "ANN_THRESHOLD",
    "CorruptIndexError",
    "Encoder",
    "Filters",
    "IMAGE_EXTENSIONS",
    "IndexStats",
    "IndexStore",
    "ModelMismatchError",
    "ModelSpec",
    "Result",
    "SearchIndex",
    "Term",
    "build_index",
    "language_token",
    "parse_date",
    "parse_query",
]
