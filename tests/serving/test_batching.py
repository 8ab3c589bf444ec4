"""Dynamic batching over real HTTP: concurrent requests are merged into fewer model calls (counted by the
server) and split back correctly; a bad image fails only its own request; --max-batch caps a call; without
batching every request is its own call."""

import concurrent.futures
import threading

from tests.serving.servers import (InProcessServer, assert_matches, b64, decompression_bomb, direct_predictions,
                                   predict, signature_stats)


def concurrently(url, bodies, signature=None):
    """POSTs every body at (nearly) the same moment from its own thread; responses in order."""
    barrier = threading.Barrier(len(bodies))

    def send(body):
        barrier.wait()
        return predict(url, "tiny", body, signature=signature)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def options(**kwargs):
    from tfcaption.serving.app import ServerOptions

    return ServerOptions(poll_seconds=0, **kwargs)


def test_concurrent_requests_are_merged_and_split_back(repository, images, reference):
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=300)) as server:
        responses = concurrently(server.url, [{"instances": [b64(image)]} for image in images])
        for response, expected in zip(responses, reference):
            assert response.status_code == 200, response.text
            assert_matches(response.json()["predictions"][0], expected)
        stats = signature_stats(server.stats())
    assert stats["requests"] == len(images) and stats["images"] == len(images)
    assert stats["calls"] <= 3 and stats["merged_calls"] >= 1 and stats["largest_call"] >= len(images) // 2, stats


def test_a_bad_image_fails_only_its_own_request(repository, images, reference):
    bodies = [{"instances": [b64(image)]} for image in images[:6]]
    bodies[1] = {"instances": [b64(images[0]), b64(b"not an image")]}  # its own index 1
    bodies[4] = {"instances": [b64(decompression_bomb())]}
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=300)) as server:
        responses = concurrently(server.url, bodies)
        stats = signature_stats(server.stats())
    assert responses[1].status_code == 400
    assert "image_bytes[1]: not a JPEG, PNG, GIF or BMP image" in responses[1].json()["error"]
    assert "image_bytes[0]" not in responses[1].json()["error"]
    assert responses[4].status_code == 400
    assert "image_bytes[0]: 20000x20000 pixels exceeds the limit" in responses[4].json()["error"]
    for index in (0, 2, 3, 5):
        assert responses[index].status_code == 200, responses[index].text
        assert_matches(responses[index].json()["predictions"][0], reference[index])
    # One merged call failed; the two blamed requests were called alone and the other four merged again.
    assert stats["fallbacks"] >= 1 and stats["merged_calls"] >= 2, stats


def test_max_batch_caps_every_call(repository, images, reference):
    with InProcessServer(repository, options(max_batch=4, batch_timeout_ms=200)) as server:
        bodies = [{"instances": [b64(image)]} for image in images] + [{"inputs": [b64(i) for i in images[:6]]}]
        responses = concurrently(server.url, bodies)
        stats = signature_stats(server.stats())
    for response, expected in zip(responses, reference):
        assert_matches(response.json()["predictions"][0], expected)
    assert responses[-1].json()["outputs"]["caption"] == [r["caption"].decode() for r in reference[:6]]
    sizes = {int(size) for size in stats["batch_sizes"]}
    assert max(sizes - {6}) <= 4 and stats["largest_call"] == 6, stats  # a 6-image request is a call of its own


def test_without_batching_every_request_is_one_call(repository, images, reference):
    with InProcessServer(repository, options(batching=False, workers=2)) as server:
        responses = concurrently(server.url, [{"instances": [b64(image)]} for image in images[:6]])
        stats = signature_stats(server.stats())
    for response, expected in zip(responses, reference):
        assert_matches(response.json()["predictions"][0], expected)
    assert stats["calls"] == 6 and stats["merged_calls"] == 0 and stats["largest_call"] == 1, stats


def test_attention_signature_is_batched_too(repository, direct, images):
    expected = direct_predictions(direct, images[:4], "caption_with_attention")
    with InProcessServer(repository, options(max_batch=32, batch_timeout_ms=300)) as server:
        responses = concurrently(server.url, [{"instances": [b64(image)]} for image in images[:4]],
                                 signature="caption_with_attention")
        stats = signature_stats(server.stats(), "caption_with_attention")
    for response, reference in zip(responses, expected):
        prediction = response.json()["predictions"][0]
        assert prediction["caption"] == reference["caption"].decode()
        assert prediction["patch_grid"] == [4, 4]
    assert stats["merged_calls"] >= 1, stats
