"""`tfcaption-serve` as a user runs it (a child process on a free port): one-line errors for paths without a
SavedModel, 200 concurrent requests with bad ones among them all answered correctly with the server's
memory bounded, and SIGTERM finishing the REST requests and gRPC calls in flight."""

import concurrent.futures
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

from tests.helpers.exports import quiet_env
from tests.serving.servers import CliServer, assert_matches, b64, decompression_bomb, predict, signature_stats


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tfcaption.cli.serve", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=quiet_env(), cwd=str(cwd))


def test_paths_without_a_saved_model_are_one_line_errors(tmp_path):
    cases = {
        tmp_path / "missing": "no such directory",
        tmp_path / "empty": "not a SavedModel, a model directory",
    }
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "root" / "tiny" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"garbage")
    cases[tmp_path / "root"] = "could be loaded"
    for path, message in cases.items():
        result = run_cli(path, "--port", "0", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("tfcaption-serve: error: ") and message in lines[0], result.stderr


def fire(url, bodies, workers):
    """Every body POSTed from `workers` threads started together; (status, JSON) per body, in order."""
    barrier = threading.Barrier(min(workers, len(bodies)))

    def send(body):
        if len(bodies) <= workers:
            barrier.wait()
        response = predict(url, "tiny", body, timeout=120)
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(send, bodies))


def load_round(images, seed):
    """200 requests: single images (row and columnar), a few pairs, and six bad ones at fixed places."""
    bad = {
        17: ({"instances": [{"b64": "%%% not base64"}]}, 400, "base64"),
        50: ({"instances": [b64(images[0]), b64(b"plain text")]}, 400, "image_bytes[1]: not a JPEG"),
        83: ({"instances": [b64(decompression_bomb())]}, 400, "exceeds the limit of 40000000"),
        120: ({"instances": [b64(b"")]}, 400, "image_bytes[0]: empty string"),
        151: ({"signature_name": "nope", "instances": [b64(images[1])]}, 400, "not found in signature def"),
        190: ({"instances": [b64(images[2][:100])]}, 400, "image_bytes[0]: not a decodable image"),
    }
    bodies, expected = [], []
    for i in range(200):
        if i in bad:
            bodies.append(bad[i][0])
            expected.append(("bad",) + bad[i][1:])
            continue
        a, b = (i * 7 + seed) % len(images), (i * 3 + seed + 1) % len(images)
        if i % 10 == 3:
            bodies.append({"inputs": {"image_bytes": [b64(images[a]), b64(images[b])]}})
            expected.append(("columnar", a, b))
        elif i % 10 == 7:
            bodies.append({"instances": [{"image_bytes": b64(images[a])}, {"image_bytes": b64(images[b])}]})
            expected.append(("rows", a, b))
        else:
            bodies.append({"instances": [b64(images[a])]})
            expected.append(("rows", a))
    return bodies, expected


def check_round(results, expected, reference):
    for (status, body), want in zip(results, expected):
        if want[0] == "bad":
            assert status == want[1] and want[2] in body["error"], body
        elif want[0] == "columnar":
            assert status == 200, body
            assert body["outputs"]["caption"] == [reference[i]["caption"].decode() for i in want[1:]]
            assert body["outputs"]["tokens"] == [reference[i]["tokens"].tolist() for i in want[1:]]
        else:
            assert status == 200, body
            for prediction, i in zip(body["predictions"], want[1:]):
                assert_matches(prediction, reference[i])


def test_200_concurrent_requests_with_bad_ones_all_correct_and_memory_bounded(serving_exports, images, reference,
                                                                              tmp_path):
    server = CliServer(serving_exports["root"], workdir=tmp_path)
    try:
        warm_bodies, warm_expected = load_round(images, seed=0)
        check_round(fire(server.url, warm_bodies[:40], 40), warm_expected[:40], reference)
        baseline_rss, _ = server.memory_kb()
        rss = []
        for seed in (1, 2):
            bodies, expected = load_round(images, seed)
            check_round(fire(server.url, bodies, 200), expected, reference)
            rss.append(server.memory_kb())
        stats = requests.get(f"{server.url}/tfcaption/stats", timeout=10).json()
    finally:
        code = server.terminate()
    default = signature_stats(stats)
    assert default["merged_calls"] >= 1 and default["calls"] < default["requests"], default
    (rss1, _), (rss2, peak) = rss
    print(f"server memory: {baseline_rss} kB warmed up, {rss1} / {rss2} kB after each round of 200, peak {peak} kB; "
          f"{default['calls']} model calls for {default['requests']} requests")
    # Bounded: 400 requests at up to 200 at once cost the server less than 150 MB above its warmed-up size
    # (measured: 15 MB), and the second round of 200 grows it by less than 30 MB (measured: 3 MB; nothing
    # accumulates per request).
    assert peak - baseline_rss < 150_000, (baseline_rss, rss)
    assert rss2 - rss1 < 30_000, (baseline_rss, rss)
    assert stats["body_bytes_held"] == 0 and stats["in_flight"] == 0
    assert code == 128 + signal.SIGTERM, server.output()


def refused(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def test_sigterm_answers_the_rest_requests_and_grpc_calls_in_flight_and_closes_both_ports(serving_exports, images,
                                                                                         reference, tmp_path):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests.serving.test_grpc import check_outputs, outputs_of, predict_request

    server = CliServer(serving_exports["root"], "--batch-timeout-ms", 2000, workdir=tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    grpc_host, grpc_port = server.grpc_target.rsplit(":", 1)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool, grpc.insecure_channel(server.grpc_target) as channel:
            futures = [pool.submit(predict, server.url, "tiny", {"instances": [b64(images[i])]}) for i in range(3)]
            call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
                predict_request(images[3:4]), timeout=60)
            deadline = time.monotonic() + 10
            while signature_stats(requests.get(f"{server.url}/tfcaption/stats", timeout=10).json()) is None or \
                    signature_stats(requests.get(f"{server.url}/tfcaption/stats", timeout=10).json())["queued"] < 4:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)  # the four wait in the queue for the 2 s batch timeout
            time.sleep(0.5)
            # No new connections or calls once shutting down.
            assert refused("127.0.0.1", port) and refused(grpc_host, grpc_port), server.output()
            responses = [f.result(timeout=60) for f in futures]
            answered = call.result()
        code = server.process.wait(timeout=60)
    finally:
        output = server.output()
        server.close()
    for response, expected in zip(responses, reference):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["predictions"][0], expected)
    check_outputs(outputs_of(answered), reference[3:4])
    assert code == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM after answering the requests in flight" in output
    assert "Traceback" not in output, output
