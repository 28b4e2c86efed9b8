"""Every 4xx answer, from the framework or the domain, has one shape: ``{"error", "message"}``."""

import httpx
import pytest

from coordinator.api.schemas import MAX_ID

ERROR_SHAPE = {"error", "message"}


def assert_error_body(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = dict(response.json())
    assert set(body) == ERROR_SHAPE, body
    assert body["error"] and body["message"]
    return body


def test_unknown_route_answers_the_error_shape(coordinator):
    body = assert_error_body(coordinator.admin.get("/v1/no-such-route"), 404)

    assert body["error"] == "not_found"


def test_unparsable_json_body_answers_the_error_shape(coordinator):
    response = coordinator.admin.post(
        "/v1/admin/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert_error_body(response, 422)


def test_invalid_body_answers_the_error_shape(coordinator):
    assert_error_body(coordinator.admin.post("/v1/admin/jobs", json={"name": 1}), 422)


def test_undeclared_method_answers_405_with_every_allowed_method(coordinator):
    response = coordinator.admin.delete("/v1/admin/jobs")

    body = assert_error_body(response, 405)
    assert body["error"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "POST"}


def test_post_to_a_read_only_job_path_is_a_405(coordinator):
    response = coordinator.admin.post("/v1/admin/jobs/1/versions")

    assert_error_body(response, 405)
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/jobs/{id}"),
        ("GET", "/v1/admin/jobs/{id}/versions"),
        ("GET", "/v1/admin/jobs/{id}/metrics"),
        ("GET", "/v1/admin/jobs/{id}/versions/1/weights"),
        ("GET", "/v1/admin/jobs/{id}/versions/1/model.tflite"),
        ("GET", "/v1/admin/jobs/1/versions/{id}/weights"),
        ("POST", "/v1/admin/jobs/{id}/resume"),
    ],
)
@pytest.mark.parametrize("out_of_range", [MAX_ID + 1, 9453184289948097151238144, 0])
def test_an_id_out_of_range_is_refused_not_a_server_error(coordinator, method, path, out_of_range):
    if out_of_range == 0 and "versions/{id}" in path:
        out_of_range = -1  # version numbers start at 0 (the initial weights): below is -1
    response = coordinator.admin.request(method, path.format(id=out_of_range))

    assert_error_body(response, 422)


def test_the_largest_id_is_simply_not_found(coordinator):
    assert_error_body(coordinator.admin.get(f"/v1/admin/jobs/{MAX_ID}"), 404)


def test_spec_documents_the_error_shape_for_every_route(coordinator):
    spec = coordinator.admin.get("/openapi.json").json()

    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {code for code in operation["responses"] if code.startswith("4")}
            errors.discard("416")  # a range download's answer, no body
            for code in errors:
                content = operation["responses"][code]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith("/ErrorBody"), (method, path, code)
            if path.startswith("/v1/"):
                assert errors, (method, path)
