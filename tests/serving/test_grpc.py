"""TF Serving's gRPC API, called with tensorflow-serving-api's own stubs over real channels: the captions of
the REST API, TF Serving's status codes, a bad image failing only its own call, 100 concurrent calls merged
with REST requests into the same batches, and the message size limit (a clean stop on SIGTERM, with a call
in flight, is checked with the REST requests in test_cli_server.py); a BLIP export's prompt signature
(`caption_with_prompt`) as over REST, an unknown prompt INVALID_ARGUMENT."""

import asyncio
import concurrent.futures
import socket

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from tests.serving.servers import assert_matches, b64, predict, signature_stats

OUTPUTS = ["beam_captions", "beam_scores", "caption", "score", "tokens"]


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(images, model="tiny", version=None, signature="", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if images is not None:
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def outputs_of(response):
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def check_outputs(outputs, references):
    for i, reference in enumerate(references):
        assert outputs["caption"][i] == reference["caption"]
        np.testing.assert_array_equal(outputs["tokens"][i], reference["tokens"])
        np.testing.assert_allclose(outputs["score"][i], reference["score"], rtol=1e-4, atol=1e-4)


def code_and_message(call, *args):
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, timeout=60)
    return raised.value.code(), raised.value.details()


def test_predict_gives_the_captions_of_the_rest_api(server, stub, images, reference):
    response = stub.Predict(predict_request(images), timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == ("tiny", 1, "serving_default")
    assert sorted(response.outputs) == OUTPUTS
    outputs = outputs_of(response)
    assert outputs["caption"].shape == (len(images),) and outputs["beam_captions"].shape == (len(images), 2)
    check_outputs(outputs, reference)
    rest = predict(server.url, "tiny", {"instances": [b64(image) for image in images]})
    assert rest.status_code == 200, rest.text
    for i, prediction in enumerate(rest.json()["predictions"]):
        assert prediction["caption"] == outputs["caption"][i].decode("utf-8")
        assert prediction["tokens"] == outputs["tokens"][i].tolist()
        assert prediction["beam_captions"] == [c.decode("utf-8") for c in outputs["beam_captions"][i]]
        np.testing.assert_allclose(prediction["beam_scores"], outputs["beam_scores"][i], rtol=1e-6, atol=1e-6)


def test_version_output_filter_and_the_attention_signature(stub, direct, images, reference):
    response = stub.Predict(predict_request(images[:2], version=1, signature="caption_with_attention"), timeout=60)
    assert response.model_spec.signature_name == "caption_with_attention"
    outputs = outputs_of(response)
    expected = direct.signatures["caption_with_attention"](image_bytes=tf.constant(images[:2]))
    np.testing.assert_allclose(outputs["attention"], expected["attention"].numpy(), atol=1e-5)
    check_outputs(outputs, reference[:2])
    request = predict_request(images[:1])
    request.output_filter.extend(["tokens", "caption"])
    filtered = stub.Predict(request, timeout=60)
    assert sorted(filtered.outputs) == ["caption", "tokens"]
    outputs = outputs_of(filtered)
    assert outputs["caption"][0] == reference[0]["caption"]
    np.testing.assert_array_equal(outputs["tokens"][0], reference[0]["tokens"])


def test_the_sampling_signature_answers_as_the_saved_model_with_each_rows_settings(stub, direct, images):
    from tests.serving.test_sampling import direct_sample

    settings = [dict(temperature=0.8, top_k=5, top_p=1.0, seed=7, max_length=0),
                dict(temperature=1.3, top_k=0, top_p=0.9, seed=8, max_length=3)]
    dtypes = {"temperature": np.float32, "top_k": np.int32, "top_p": np.float32, "seed": np.int64,
              "max_length": np.int32}
    columns = {name: np.array([s[name] for s in settings], dtype) for name, dtype in dtypes.items()}
    response = stub.Predict(predict_request(images[:2], signature="sample", **columns), timeout=60)
    outputs = outputs_of(response)
    for i, s in enumerate(settings):
        expected = direct_sample(direct, images[i], **s)
        np.testing.assert_array_equal(outputs["tokens"][i], expected["tokens"])
        assert outputs["caption"][i] == expected["caption"]
    columns["top_p"] = np.array([1.0, 1.5], np.float32)
    code, details = code_and_message(stub.Predict, predict_request(images[:2], signature="sample", **columns))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_p[1]" in details, details


def test_a_bad_image_fails_its_own_call_with_invalid_argument_and_the_next_call_succeeds(stub, images, reference):
    for bad, message in ((b"plain text", "image_bytes[1]: not a JPEG"), (b"", "image_bytes[1]: empty string"),
                         (images[2][:100], "image_bytes[1]: not a decodable image")):
        code, details = code_and_message(stub.Predict, predict_request([images[0], bad]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
        check_outputs(outputs_of(stub.Predict(predict_request(images[:1]), timeout=60)), reference[:1])


def test_tf_servings_status_codes_for_unknown_models_versions_signatures_and_inputs(stub, images):
    cases = [
        (predict_request(images[:1], model="nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request"),
        (predict_request(images[:1], version=7), grpc.StatusCode.NOT_FOUND, "Specific(tiny, 7)"),
        (predict_request(images[:1], signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found'),
        (predict_request(None), grpc.StatusCode.INVALID_ARGUMENT,
         "input size does not match signature: 0!=1 len({}) != len({image_bytes}). Sent extra: {}. "
         "Missing but required: {image_bytes}."),
        (predict_request(images[:1], seed=np.array([1], np.int32)), grpc.StatusCode.INVALID_ARGUMENT,
         "Sent extra: {seed}"),
        (predict_request(None, image_bytes=np.zeros([1], np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
         "Input tensor 'image_bytes' has dtype float32, the signature's is string"),
        (predict_request([images[:1]]), grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 1]"),
        (predict_request(images[:0]), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
        (predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    labelled = predict_request(images[:1])
    labelled.model_spec.version_label = "stable"
    cases.append((labelled, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable"))
    for alias, message in (("nope", "output tensor alias not found in signature: nope"),
                           ("caption", "duplicate output tensor alias: caption")):
        filtered = predict_request(images[:1])
        filtered.output_filter.extend(["caption", alias] if alias == "caption" else [alias])
        cases.append((filtered, grpc.StatusCode.INVALID_ARGUMENT, message))
    for request, expected_code, message in cases:
        code, details = code_and_message(stub.Predict, request)
        assert code == expected_code and message in details, (code, details)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "tiny"
    code, details = code_and_message(stub.Classify, classify)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in details


def test_get_model_metadata_returns_the_signature_defs_of_the_rest_api(server, stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "tiny"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == ("tiny", 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert sorted(default.outputs) == OUTPUTS
    rest = requests.get(f"{server.url}/v1/models/tiny/metadata", timeout=10).json()
    assert sorted(signatures.signature_def) == sorted(rest["metadata"]["signature_def"]["signature_def"])
    for fields, message in (([], "must specify at least one metadata_field"),
                            (["graph"], "Metadata field graph is not supported")):
        bad = get_model_metadata_pb2.GetModelMetadataRequest()
        bad.model_spec.name = "tiny"
        bad.metadata_field.extend(fields)
        code, details = code_and_message(stub.GetModelMetadata, bad)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_get_model_status_reports_the_version_available(channel):
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = models.GetModelStatus(request, timeout=60)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""
    request.model_spec.version.value = 1
    assert models.GetModelStatus(request, timeout=60).model_version_status[0].version == 1
    for name, version, message in (("nope", None, "Could not find any versions of model nope"),
                                   ("tiny", 9, "Could not find version 9 of model tiny")):
        missing = get_model_status_pb2.GetModelStatusRequest()
        missing.model_spec.name = name
        if version is not None:
            missing.model_spec.version.value = version
        code, details = code_and_message(models.GetModelStatus, missing)
        assert code == grpc.StatusCode.NOT_FOUND and message in details


def test_100_concurrent_calls_with_rest_requests_among_them_are_all_answered_in_shared_batches(server, stub, images,
                                                                                                reference):
    before = signature_stats(server.stats())
    calls = [stub.Predict.future(predict_request([images[i % len(images)]]), timeout=120) for i in range(100)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        rest = list(pool.map(lambda i: predict(server.url, "tiny", {"instances": [b64(images[i])]}), range(10)))
    for i, call in enumerate(calls):
        check_outputs(outputs_of(call.result()), [reference[i % len(images)]])
    for i, response in enumerate(rest):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["predictions"][0], reference[i])
    after = signature_stats(server.stats())
    requests_served, calls_made = after["requests"] - before["requests"], after["calls"] - before["calls"]
    assert requests_served == 110 and calls_made < requests_served, (before, after)
    assert after["merged_calls"] > before["merged_calls"]


def test_the_prompt_signature_gives_the_rest_captions_and_an_unknown_prompt_is_invalid_argument(blip_server):
    from tests.helpers.hf_fixture import baked_prompts
    from tests.helpers.hf_fixture import images as fixture_images

    default, other = baked_prompts()
    pictures = [path.read_bytes() for path in fixture_images()]
    prompts = [other, default, ""]  # "": the default
    with grpc.insecure_channel(blip_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(pictures, model="prompt", signature="caption_with_prompt",
                                                prompt=prompts), timeout=60)
        assert response.model_spec.signature_name == "caption_with_prompt"
        outputs = outputs_of(response)
        instances = [{"image_bytes": b64(picture), "prompt": prompt} for picture, prompt in zip(pictures, prompts)]
        rest = predict(blip_server.url, "prompt", {"instances": instances}, signature="caption_with_prompt")
        assert rest.status_code == 200, rest.text
        for i, prediction in enumerate(rest.json()["predictions"]):
            assert prediction["caption"] == outputs["caption"][i].decode("utf-8")
            assert prediction["tokens"] == outputs["tokens"][i].tolist()
            assert prediction["beam_captions"] == [c.decode("utf-8") for c in outputs["beam_captions"][i]]
            np.testing.assert_allclose(prediction["score"], outputs["score"][i], rtol=1e-5, atol=1e-5)
        assert outputs["caption"][0].decode().startswith(other) and outputs["caption"][1].decode().startswith(default)

        code, details = code_and_message(stub.Predict, predict_request(
            pictures[:2], model="prompt", signature="caption_with_prompt", prompt=[default, "a cat"]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "prompt[1]: not a prompt baked into this export at export time, got [a cat]" in details
        assert f"it takes [{default}], [{other}]" in details and "prompt[0]" not in details
        again = stub.Predict(predict_request(pictures[:1], model="prompt", signature="caption_with_prompt",
                                             prompt=[other]), timeout=60)
        assert outputs_of(again)["caption"][0] == outputs["caption"][0]


def test_an_address_in_use_is_a_one_line_error(repository):
    from tfcaption.serving.app import ServingApp

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=rf"^cannot listen for gRPC on 127\.0\.0\.1:{port}: the port is in use"):
            asyncio.run(ServingApp(repository).start_grpc("127.0.0.1", port))


def test_a_message_above_max_body_mb_is_resource_exhausted_and_the_next_call_answered(repository, images,
                                                                                      reference):
    from tests.serving.servers import InProcessServer
    from tfcaption.serving.app import ServerOptions
    from tfcaption.serving.limits import MiB, Limits

    options = ServerOptions(limits=Limits(max_body_bytes=MiB // 2))
    with InProcessServer(repository, options, grpc=True) as small, grpc.insecure_channel(small.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        code, details = code_and_message(stub.Predict, predict_request([images[0], b"x" * (MiB // 2)]))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        check_outputs(outputs_of(stub.Predict(predict_request(images[:1]), timeout=60)), reference[:1])
