"""Limits over real HTTP: body size (413, also for a chunked body), images per request (400), a full queue
(503), request bodies held at once (503), the per-request timeout (504); after each the server answers a
good request."""

import concurrent.futures
import json
import threading
import time

import pytest
import requests

from tests.helpers.exports import encode, random_rgb
from tests.serving.servers import InProcessServer, assert_matches, b64, direct_predictions, predict, signature_stats

KiB = 1024


@pytest.fixture(scope="module")
def image():
    return encode(random_rgb(32, 32, seed=1))


@pytest.fixture(scope="module")
def expected(direct, image):
    return direct_predictions(direct, [image])[0]


def options(**kwargs):
    from tfcaption.serving.app import ServerOptions
    from tfcaption.serving.limits import Limits

    batching = {k: kwargs.pop(k) for k in ("max_batch", "batch_timeout_ms") if k in kwargs}
    return ServerOptions(poll_seconds=0, limits=Limits(**kwargs), **batching)


def good(server, image, expected):
    response = predict(server.url, "tiny", {"instances": [b64(image)]})
    assert response.status_code == 200, response.text
    assert_matches(response.json()["predictions"][0], expected)


def in_background(url, bodies):
    pool = concurrent.futures.ThreadPoolExecutor(len(bodies))
    return pool, [pool.submit(predict, url, "tiny", body) for body in bodies]


def test_oversized_body_gets_413(repository, image, expected):
    big = encode(random_rgb(200, 200, seed=5))  # ~120 kB, ~160 kB as base64
    with InProcessServer(repository, options(max_body_bytes=64 * KiB, max_inflight_bytes=256 * KiB)) as server:
        response = predict(server.url, "tiny", {"instances": [b64(big)]})
        assert response.status_code == 413
        assert "exceeds this server's limit of 65536 bytes" in response.json()["error"]
        good(server, image, expected)
        # Chunked (no Content-Length): counted while it streams in.
        body = ('{"instances": [{"b64": "%s"}]}' % b64(big)["b64"]).encode()
        chunks = (body[i:i + 8 * KiB] for i in range(0, len(body), 8 * KiB))
        response = requests.post(f"{server.url}/v1/models/tiny:predict", data=chunks, timeout=30)
        assert response.status_code == 413 and "exceeds this server's limit" in response.json()["error"]
        good(server, image, expected)


def test_too_many_images_in_one_request_gets_400(repository, image, expected):
    with InProcessServer(repository, options(max_images=3)) as server:
        response = predict(server.url, "tiny", {"instances": [b64(image)] * 4})
        assert response.status_code == 400 and "4 examples in one request exceed" in response.json()["error"]
        good(server, image, expected)


def test_full_queue_gets_503_and_the_queued_requests_are_answered(repository, image, expected):
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=1500, max_queue=2, max_images=2)) as server:
        pool, waiting = in_background(server.url, [{"instances": [b64(image)]}] * 2)
        deadline = time.monotonic() + 10
        while (signature_stats(server.stats()) or {}).get("queued", 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = predict(server.url, "tiny", {"instances": [b64(image)]})
        assert response.status_code == 503
        assert "queue to which this task was submitted is full" in response.json()["error"]
        for future in waiting:
            assert future.result().status_code == 200
            assert_matches(future.result().json()["predictions"][0], expected)
        pool.shutdown()
        stats = signature_stats(server.stats())
    assert stats["rejected_queue_full"] == 1 and stats["calls"] == 1, stats


def test_request_bodies_held_at_once_are_bounded(repository, image, expected):
    medium = encode(random_rgb(110, 110, seed=6))  # ~36 kB, ~49 kB as base64
    limits = dict(max_body_bytes=64 * KiB, max_inflight_bytes=128 * KiB)
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=1500, **limits)) as server:
        body = {"instances": [b64(medium)]}
        size = len(json.dumps(body))
        assert 2 * size <= 128 * KiB < 3 * size
        pool, waiting = in_background(server.url, [body] * 2)
        deadline = time.monotonic() + 10
        while server.stats()["body_bytes_held"] < 2 * size:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = predict(server.url, "tiny", {"instances": [b64(medium)]})
        assert response.status_code == 503 and "bytes of request bodies" in response.json()["error"]
        assert all(f.result().status_code == 200 for f in waiting)
        pool.shutdown()
        assert server.stats()["body_bytes_held"] == 0
        good(server, image, expected)


def test_request_timeout_gets_504_and_leaves_the_queue(repository, image, expected):
    with InProcessServer(repository, options(max_batch=2, batch_timeout_ms=3000, request_timeout_s=0.3)) as server:
        started = time.monotonic()
        response = predict(server.url, "tiny", {"instances": [b64(image)]})
        assert response.status_code == 504 and time.monotonic() - started < 2.5
        assert "timed out after 0.3 s" in response.json()["error"]
        stats = signature_stats(server.stats())
        assert stats["abandoned"] == 1 and stats["queued"] == 0 and stats["calls"] == 0, stats
        # Two requests fill a batch of 2 at once: answered well within the timeout.
        barrier = threading.Barrier(2)

        def send():
            barrier.wait()
            return predict(server.url, "tiny", {"instances": [b64(image)]})

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for response in list(pool.map(lambda _: send(), range(2))):
                assert response.status_code == 200, response.text
                assert_matches(response.json()["predictions"][0], expected)
