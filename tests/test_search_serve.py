"""`longclip-search serve`: a real server on 127.0.0.1, started as a user starts it; its JSON API answers what the index
answers in-process (and a photo queried by itself comes first), serves indexed photos and nothing else; a real
headless Chromium (Debian's chromium + chromium-driver, installed by .ci/run) types a long query into the page and
sees the expected first thumbnail, with no request leaving the server; refusals are one line."""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import socket
import tempfile
import threading
import time

import pytest
import torch
from cli_runner import start_console_script
from conftest import tiny_image_processor, tiny_longclip_config
from PIL import Image
from skimage import data

from modeling_longclip import LongCLIPModel, LongCLIPProcessor
from modeling_longclip.converters.clip_preprocessing import build_clip_tokenizer
from modeling_longclip.search import PhotoIndex
from modeling_longclip.search.cli import main as search_main
from modeling_longclip.search.serve import serve_main

httpx = pytest.importorskip("httpx", reason="gradio (the [app] extra, in the test extra) brings httpx")
pytest.importorskip("gradio", reason='longclip-search serve needs gradio: pip install -e ".[app]"')

SCENES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
ODD_NAME = "astronaut $1 copy.tiff"  # a space and a `$` in the name, and a format browsers do not show
# A query past the model's 248 tokens (read in windows), typed into the page by the browser test.
LONG_QUERY = " ".join(
    f"photo {n}: an orange rocket on its launch pad at dusk, the gantry lit, clouds low over the coast;"
    for n in range(20)
)
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
QUIET = {"OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> dict:
    """Six real photos (one in a subfolder), an oddly named TIFF, a text file; a tiny Long-CLIP folder; the index."""
    root = tmp_path_factory.mktemp("serve")
    photos = root / "photos"
    (photos / "trips").mkdir(parents=True)
    for number, name in enumerate(SCENES):
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((96, 64), Image.BICUBIC)
        image.save(photos / ("trips" if number % 2 else "") / f"{name}.jpg", quality=92)
    Image.fromarray(data.astronaut()).resize((64, 64)).save(photos / ODD_NAME)
    (photos / "notes.txt").write_text("not a photo")
    torch.manual_seed(0)
    model = root / "model"
    LongCLIPModel(tiny_longclip_config()).save_pretrained(model)
    LongCLIPProcessor(tiny_image_processor(), build_clip_tokenizer(248)).save_pretrained(model)
    PhotoIndex.build(photos, root / "index", model, device="cpu", num_workers=0, progress=False).close()
    return {"photos": photos, "model": model, "index": root / "index"}


@pytest.fixture(scope="module")
def in_process(collection):
    """The same index opened in this process: what the server must answer."""
    with PhotoIndex.open(collection["index"], device="cpu") as index:
        yield index


@pytest.fixture(scope="module")
def server(collection):
    """`longclip-search serve INDEX --port 0` in a subprocess; yields its URL; stopped with SIGTERM, which must end it
    cleanly with the command rule's one line."""
    process = start_console_script("longclip-search", "serve", collection["index"], "--port", "0", env=QUIET)
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    drain.start()
    url, deadline = None, time.monotonic() + 180
    while url is None and time.monotonic() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 1)[0]:
            line = process.stdout.readline()
            if line.startswith("serving "):
                url = line.split(" at ", 1)[1].split()[0]
    if url is None:
        process.kill()
        drain.join(5)
        pytest.fail(f"the server did not start: {''.join(stderr)[-3000:]}")
    yield url
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 143
    drain.join(10)
    assert stderr[-1].strip() == "interrupted (SIGTERM): nothing was written; the index is unchanged", stderr[-3:]


def test_text_query_answers_what_the_index_answers(server, in_process):
    reply = httpx.post(f"{server}api/search", json={"text": LONG_QUERY, "k": 5}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = in_process.search(text=LONG_QUERY, k=5)
    assert [hit["path"] for hit in body["hits"]] == [hit.path for hit in expected]
    assert [hit["score"] for hit in body["hits"]] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    assert body["tokens"] == in_process.count_tokens(LONG_QUERY) > body["text_limit"] == 248
    assert "read in windows" in body["note"]
    first = body["hits"][0]
    assert first["photo"] == f"photo/{first['path']}" and first["thumbnail"] == f"thumb/{first['path']}"


def test_a_photo_uploaded_as_the_query_finds_itself_first(server, collection):
    photo = collection["photos"] / "trips" / "coffee.jpg"
    reply = httpx.post(
        f"{server}api/search/image", files={"image": ("q.jpg", photo.read_bytes(), "image/jpeg")}, data={"k": "3"}
    )
    assert reply.status_code == 200, reply.text
    hits = reply.json()["hits"]
    assert len(hits) == 3 and hits[0]["path"] == "trips/coffee.jpg" and hits[0]["score"] == pytest.approx(1, abs=1e-3)
    assert hits[1]["score"] < hits[0]["score"]


def test_only_indexed_photos_are_served(server, collection):
    photo = httpx.get(f"{server}photo/trips/coffee.jpg")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content == (collection["photos"] / "trips" / "coffee.jpg").read_bytes()
    odd = httpx.get(f"{server}photo/{ODD_NAME.replace(' ', '%20').replace('$', '%24')}")
    assert odd.status_code == 200 and odd.headers["content-type"] == "image/png"  # a TIFF, converted for browsers
    assert Image.open(io.BytesIO(odd.content)).size == (64, 64)
    thumbnail = httpx.get(f"{server}thumb/trips/coffee.jpg")
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).format == "JPEG"
    for outside in ("notes.txt", "%2E%2E/model/config.json", "%2Fetc%2Fpasswd", "trips/missing.jpg"):
        for route in ("photo", "thumb"):
            reply = httpx.get(f"{server}{route}/{outside}")
            assert reply.status_code == 404, (route, outside, reply.text)


def test_bad_queries_are_refused_in_one_line(server):
    cases = [
        (httpx.post(f"{server}api/search", json={"text": "   ", "k": 3}), "the query text is empty."),
        (httpx.post(f"{server}api/search", json={"text": "a cat", "k": 0}), "k must be a whole number from 1 to 200"),
        (
            httpx.post(f"{server}api/search/image", files={"image": ("x.jpg", b"not an image", "image/jpeg")}),
            "the uploaded image cannot be read",
        ),
    ]
    for reply, message in cases:
        assert reply.status_code == 400 and reply.json()["error"].startswith(message), reply.text
    info = httpx.get(f"{server}api/info").json()
    assert info["photos"] == 7 and info["text_limit"] == 248 and info["reads_long_text"] is True


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does)",
)
def test_a_browser_types_a_long_query_and_sees_the_expected_first_thumbnail(server, in_process, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium drives Chromium (in the test extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        browser.get(server)
        wait = WebDriverWait(browser, 60)
        box = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#query textarea"))
        box.send_keys(LONG_QUERY)
        tokens = in_process.count_tokens(LONG_QUERY)
        wait.until(lambda b: b.find_element(By.ID, "tokens").text.startswith(f"{tokens} / 248 tokens"))
        assert "read in windows" in browser.find_element(By.ID, "tokens").text
        browser.find_element(By.ID, "search").click()
        first = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#results a.hit"))
        expected = in_process.search(text=LONG_QUERY, k=20)
        assert first.get_attribute("data-path") == expected[0].path
        hits = browser.find_elements(By.CSS_SELECTOR, "#results a.hit")
        assert [hit.get_attribute("data-path") for hit in hits] == [hit.path for hit in expected]  # all 7, in order
        assert f"{expected[0].score:.4f}" in first.text
        assert first.get_attribute("href") == f"{server}photo/{expected[0].path}"  # a click opens the photo
        assert first.get_attribute("target") == "_blank"
        wait.until(lambda b: b.execute_script("return document.querySelector('#results img').naturalWidth") > 0)
        assert f"of {len(in_process)} photos" in browser.find_element(By.ID, "status").text
        elsewhere = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(name => !name.startsWith(location.origin))"
        )
        assert elsewhere == []  # offline: nothing fetched from another host (fonts, scripts, analytics)
    finally:
        browser.quit()


def test_serve_is_listed_and_refusals_are_one_line(collection, tmp_path, capsys, monkeypatch):
    assert search_main(["--help"]) == 0 and "longclip-search serve" in capsys.readouterr().out
    assert serve_main([str(tmp_path / "missing.index")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.index: no such index folder.")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_main([str(collection["index"]), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == f"error: 127.0.0.1:{port}: cannot listen there (Address already in use)."
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # as if the [app] extra were not installed
    assert serve_main([str(collection["index"])]) == 2
    assert capsys.readouterr().err.strip() == (
        'error: longclip-search serve needs gradio (gradio is missing): pip install "modeling-longclip[app]"'
    )
