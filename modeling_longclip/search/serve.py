"""`longclip-search serve INDEX_DIR`: a web page and a JSON API over one photo index, on localhost by default.

The page is a Gradio app mounted on a FastAPI app (so the same `build_app(index)` runs as a Hugging Face Space): a
multi-line query box that counts the query's tokens against the model's limit as it is typed, a grid of thumbnails
with their scores (a click opens the photo), and an image upload that searches by photo. Scripts use the JSON API
beside it (`pip install "modeling-longclip[app]"` brings gradio, FastAPI and uvicorn):

```
POST /api/search        {"text": "...", "k": 10, "ann": false}   -> {"hits": [{"path", "score", "photo", "thumbnail"}],
                                                                       "tokens", "text_limit", "note"}
POST /api/search/image  multipart: file "image", form field "k"   -> {"hits": [...]}
GET  /api/info          what the index holds (`longclip-search info --json`)
GET  /photo/PATH        the photo as stored (TIFF converted to PNG);  GET /thumb/PATH  a JPEG thumbnail, upright
```

`path` and `score` are those of `longclip-search query --json`; `photo` and `thumbnail` are URLs relative to the
server's root. Only indexed photos are served (`PhotoIndex.resolve` refuses any other path: 404). One PhotoIndex serves
every request; the model's tokenizer and forward pass are used under one lock, and an update committed by
`longclip-search index` while the server runs is seen on the next query. Offline by design: Gradio's analytics and
version check are off and its default theme's fonts ship in the wheel, so the page fetches nothing from another host
(the browser test checks it).
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations at run time.
import html
import io
import os
import socket
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from ..common.cli import ArgumentParser, command
from .cli import model_options, positive
from .index import LongQueryWarning, PhotoIndex, SearchHit
from .photos import UNREADABLE, load_photo
from .storage import SearchIndexError

SERVED_AS_IS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
SERVED_AS_IS |= {".gif": "image/gif", ".bmp": "image/bmp"}  # what browsers show; TIFF is converted to PNG
THUMBNAIL_SIZE = 256
MAX_K = 200
GRID_CSS = """
.hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.hit { display: flex; flex-direction: column; text-decoration: none; color: inherit; overflow: hidden;
       border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg); }
.hit:hover { border-color: var(--color-accent); }
.hit img { width: 100%; aspect-ratio: 1; object-fit: contain; background: var(--background-fill-secondary); }
.hit .score { font-weight: 600; padding: 6px 8px 0; }
.hit .path { font-size: var(--text-sm); padding: 0 8px 8px; overflow-wrap: anywhere; color: var(--body-text-color-subdued); }
"""


def import_app_packages():
    """(gradio, fastapi, uvicorn), with Gradio's telemetry off; refused in one line when the `app` extra is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no analytics, no version check against its server
    os.environ.setdefault("GRADIO_SSR_MODE", "False")  # no Node server beside the Python one
    try:
        import fastapi
        import gradio
        import uvicorn
    except ImportError as error:
        raise SearchIndexError(
            f'longclip-search serve needs gradio ({error.name} is missing): pip install "modeling-longclip[app]"'
        ) from None
    return gradio, fastapi, uvicorn


class SearchService:
    """What the page and the JSON API share: queries with their token count and note, thumbnails, photo files."""

    def __init__(self, index: PhotoIndex, ann: bool = False):
        self.index, self.ann = index, ann
        self.lock = threading.Lock()  # the tokenizer and the model are used by one request at a time
        self.thumbnails: OrderedDict[tuple, bytes] = OrderedDict()
        self.thumbnail_lock = threading.Lock()
        with self.lock:
            self.index.model_and_processor()  # loaded now: a broken model is refused at start, not on a query
            self.text_limit = self.index.text_limit
            self.windows = self.index.reads_long_text()
        self.model_name = Path(index.manifest["model"]["path"]).name

    # -- queries ---------------------------------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self.lock:
            return self.index.count_tokens(text)

    def token_note(self, tokens: int) -> str | None:
        """What happens to a query of `tokens` tokens (None when the model reads it whole)."""
        if self.text_limit is None or tokens <= self.text_limit:
            return None
        if self.windows:
            return f"longer than {self.text_limit} tokens: read in windows, every token counts"
        return f"longer than {self.text_limit} tokens: the model reads the first {self.text_limit}, the rest is cut"

    def token_line(self, text: str) -> str:
        """The counter under the query box (Markdown)."""
        if not text or not text.strip():
            return f"0 / {self.text_limit} tokens" if self.text_limit else "0 tokens"
        tokens = self.count_tokens(text)
        line = f"**{tokens}** / {self.text_limit} tokens" if self.text_limit else f"**{tokens}** tokens"
        note = self.token_note(tokens)
        return f"{line} ({note})" if note else line

    def search_text(self, text: str, k: int) -> dict:
        if not isinstance(text, str) or not text.strip():
            raise SearchIndexError("the query text is empty.")
        k = self.check_k(k)
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", LongQueryWarning)  # said in the reply's `note` instead
            tokens = self.index.count_tokens(text)
            hits = self.index.search(text=text, k=k, ann=self.ann)
        return {"hits": self.hits_json(hits), "tokens": tokens, "text_limit": self.text_limit, **self.note(tokens)}

    def search_image(self, image, k: int) -> dict:
        """Query by a photo: a path, a PIL image, or the bytes of an image file (an upload)."""
        k = self.check_k(k)
        if isinstance(image, bytes | bytearray):
            try:
                image = load_photo(io.BytesIO(image))
            except UNREADABLE as error:
                raise SearchIndexError(f"the uploaded image cannot be read ({type(error).__name__}).") from None
        with self.lock:
            hits = self.index.search(image=image, k=k, ann=self.ann)
        return {"hits": self.hits_json(hits)}

    def note(self, tokens: int) -> dict:
        return {"note": self.token_note(tokens)}

    @staticmethod
    def check_k(k) -> int:
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise SearchIndexError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}.")
        return k

    @staticmethod
    def hits_json(hits: list[SearchHit]) -> list[dict]:
        return [
            {
                "path": h.path,
                "score": h.score,
                "photo": f"photo/{quote(h.path)}",
                "thumbnail": f"thumb/{quote(h.path)}",
            }
            for h in hits
        ]

    # -- files -----------------------------------------------------------------------------------------------------

    def photo(self, path: str) -> tuple[bytes | Path, str]:
        """(the file, or PNG bytes for formats browsers do not show; its media type) of an indexed photo."""
        file = self.index.resolve(path)
        media_type = SERVED_AS_IS.get(file.suffix.lower())
        if media_type is not None:
            return file, media_type
        buffer = io.BytesIO()
        self.open_photo(file).save(buffer, "PNG")
        return buffer.getvalue(), "image/png"

    def thumbnail(self, path: str, size: int = THUMBNAIL_SIZE) -> bytes:
        """A JPEG of an indexed photo, upright (EXIF orientation applied), at most `size` pixels a side; the last
        thousand are kept in memory, keyed by the file's size and modification time."""
        file = self.index.resolve(path)
        stat = file.stat()
        key = (path, stat.st_size, stat.st_mtime_ns, size)
        with self.thumbnail_lock:
            if key in self.thumbnails:
                self.thumbnails.move_to_end(key)
                return self.thumbnails[key]
        image = self.open_photo(file)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        with self.thumbnail_lock:
            self.thumbnails[key] = buffer.getvalue()
            while len(self.thumbnails) > 1000:
                self.thumbnails.popitem(last=False)
        return buffer.getvalue()

    @staticmethod
    def open_photo(file: Path) -> Image.Image:
        try:
            return load_photo(file)
        except UNREADABLE as error:
            raise SearchIndexError(f"{file}: cannot be decoded ({type(error).__name__}).") from None

    # -- the page --------------------------------------------------------------------------------------------------

    def results_html(self, reply: dict) -> str:
        """The grid: each hit a thumbnail, its score and path, linked to the photo (opened in a new tab)."""
        cells = []
        for rank, hit in enumerate(reply["hits"], 1):
            path = html.escape(hit["path"]).replace("$", "&#36;")  # `$` too: Gradio's HTML is a JS template
            cells.append(
                f'<a class="hit" href="{hit["photo"]}" target="_blank" rel="noopener" data-rank="{rank}" '
                f'data-path="{path}" title="{path}"><img src="{hit["thumbnail"]}" alt="{path}" loading="lazy">'
                f'<span class="score">{hit["score"]:.4f}</span><span class="path">{path}</span></a>'
            )
        return f'<div class="hits">{"".join(cells)}</div>'

    def page_search(self, text: str, k, image=None) -> tuple[str, str]:
        """(status line, results grid) for the page: a text query, else the uploaded photo."""
        started = time.perf_counter()
        try:
            if text and text.strip():
                reply = self.search_text(text, k)
                what = f"a {reply['tokens']}-token query" + (f" ({reply['note']})" if reply["note"] else "")
            elif image is not None:
                reply, what = self.search_image(image, k), "the uploaded photo"
            else:
                return "Describe a photo, or upload one.", ""
        except SearchIndexError as error:
            return f"error: {error}", ""
        milliseconds = 1000 * (time.perf_counter() - started)
        found = f"{len(reply['hits'])} of {len(self.index)} photos"
        return f"{found}, closest to {what} first ({milliseconds:.0f} ms)", self.results_html(reply)

    def blocks(self, k: int):
        gr, _, _ = import_app_packages()
        title = f"Photo search: {len(self.index)} photos, {self.model_name}"
        with gr.Blocks(title=title, analytics_enabled=False) as page:
            gr.Markdown(f"## {html.escape(title)}\nDescribe a photo in as many words as you like, or upload one.")
            with gr.Row():
                with gr.Column(scale=4):
                    query = gr.Textbox(
                        lines=4,
                        max_lines=12,
                        label="Query",
                        placeholder="the harbour at dawn, a red boat ...",
                        elem_id="query",
                    )
                    tokens = gr.Markdown(self.token_line(""), elem_id="tokens")
                with gr.Column(scale=1, min_width=200):
                    image = gr.Image(
                        type="pil", label="or search by photo", sources=["upload", "clipboard"], height=160
                    )
                    count = gr.Slider(1, MAX_K, value=k, step=1, label="results")
                    button = gr.Button("Search", variant="primary", elem_id="search")
            status = gr.Markdown(elem_id="status")
            grid = gr.HTML(css_template=GRID_CSS, elem_id="results")
            private = {"api_visibility": "private"}  # scripts use the JSON API (build_app), not Gradio's
            query.change(self.token_line, query, tokens, trigger_mode="always_last", show_progress="hidden", **private)
            for event in (button.click, query.submit):
                event(self.page_search, [query, count, image], [status, grid], **private)
            image.upload(
                lambda picture, n: self.page_search("", n, picture), [image, count], [status, grid], **private
            )
        return page


def build_app(index: PhotoIndex, k: int = 20, ann: bool = False):
    """The FastAPI app: the JSON API, the photo and thumbnail routes, and the Gradio page at `/`."""
    gr, fastapi, _ = import_app_packages()
    from fastapi.responses import FileResponse, JSONResponse, Response
    from pydantic import BaseModel

    service = SearchService(index, ann=ann)
    app = fastapi.FastAPI(
        title="longclip-search", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json"
    )

    class TextQuery(BaseModel):
        text: str
        k: int = 10

    @app.exception_handler(SearchIndexError)
    def refused(request, error: SearchIndexError):
        return JSONResponse({"error": str(error)}, status_code=400)

    def indexed(path: str) -> str:
        """`path` when it is a photo of the index; anything else is not found (never a file outside the index)."""
        try:
            index.resolve(path)
        except SearchIndexError as error:
            raise fastapi.HTTPException(404, str(error)) from None
        return path

    @app.post("/api/search")
    def api_search(query: TextQuery) -> dict:
        return service.search_text(query.text, query.k)

    @app.post("/api/search/image")
    def api_search_image(image: fastapi.UploadFile, k: int = fastapi.Form(10)) -> dict:
        return service.search_image(image.file.read(), k)

    @app.get("/api/info")
    def api_info() -> dict:
        return {**index.info(), "text_limit": service.text_limit, "reads_long_text": service.windows}

    @app.get("/photo/{path:path}")
    def photo(path: str):
        content, media_type = service.photo(indexed(path))
        if isinstance(content, Path):
            return FileResponse(content, media_type=media_type)
        return Response(content, media_type=media_type)

    @app.get("/thumb/{path:path}")
    def thumbnail(path: str):
        return Response(
            service.thumbnail(indexed(path)), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
        )

    return gr.mount_gradio_app(app, service.blocks(k), path="/", footer_links=["gradio"])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: any free one), bound before the server starts so its address can be printed."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        reason = os.strerror(error.errno) if (error.errno or 0) > 0 else (error.strerror or str(error))
        raise SearchIndexError(f"{host}:{port}: cannot listen there ({reason}).") from None


@command(kept="nothing was written; the index is unchanged")
def serve_main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="longclip-search serve", description="A web page and a JSON API to search an index (Ctrl-C stops it)."
    )
    parser.add_argument("index_dir")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=7860, help="0 picks a free port (printed)")
    parser.add_argument("-k", type=positive, default=20, help="results shown at first (the page has a slider)")
    parser.add_argument("--model", help="the model folder (default: the one the index was built with)")
    parser.add_argument("--ann", action="store_true", help="answer from the FAISS index (build it with `ann`)")
    model_options(parser)
    args = parser.parse_args(argv)
    if args.k > MAX_K:
        parser.error(f"-k must be at most {MAX_K}")
    _, _, uvicorn = import_app_packages()
    index = PhotoIndex.open(args.index_dir, args.model, device=args.device, dtype=args.dtype)
    if args.ann and index.ann_info() is None:
        raise SearchIndexError(f"{index.index_dir}: no current ANN index; build it with longclip-search ann.")
    listener = bind(args.host, args.port)
    try:
        app = build_app(index, k=args.k, ann=args.ann)
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(
            f"serving {len(index)} photos of {index.index_dir} at http://{shown}:{port}/ "
            f"(JSON API: POST /api/search; Ctrl-C stops)",
            flush=True,
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        server.run(sockets=[listener])
    finally:
        listener.close()
        index.close()
    return 0


__all__ = ["SearchService", "build_app", "serve_main"]
