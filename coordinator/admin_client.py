"""A client for the coordinator's admin API: publish plans, create and steer jobs, read metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from fedge.errors import FedgeError
from fedge.manifest import manifest_path_for
from fedge.wire import decode_vector


class AdminError(FedgeError):
    """The coordinator refused an admin request (the message is its own), or was unreachable.

    ``status`` is the HTTP status, 0 when no answer came.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"coordinator answered {status}: {message}" if status else message)
        self.status = status


class AdminClient:
    """Admin operations against the coordinator at ``base_url`` with the admin ``token``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def publish_plan(self, plan_path: Path) -> dict[str, Any]:
        """Upload ``NAME.tflite``, its initial weights and manifest; return the plan record."""
        manifest = json.loads(manifest_path_for(plan_path).read_text())
        plan_sha = self.put_blob(plan_path.read_bytes())
        weights_sha = self.put_blob(
            (plan_path.parent / manifest["initial_weights_file"]).read_bytes()
        )
        body = {
            "manifest": manifest,
            "plan_sha256": plan_sha,
            "initial_weights_sha256": weights_sha,
        }
        if manifest.get("inference_file"):
            template = (plan_path.parent / manifest["inference_file"]).read_bytes()
            body["inference_sha256"] = self.put_blob(template)
        return self._json("POST", "/v1/admin/plans", json=body)

    def inference_model(self, job_id: int, number: int) -> bytes:
        """An inference-only ``.tflite`` of a version."""
        url = f"/v1/admin/jobs/{job_id}/versions/{number}/model.tflite"
        return self._request("GET", url).content

    def put_blob(self, data: bytes) -> str:
        """Store bytes on the coordinator; return their sha256."""
        return str(self._json("PUT", "/v1/admin/blobs", content=data)["sha256"])

    def create_job(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create a job from a JobCreate-shaped dict (name, plan_id, aggregation, ...)."""
        return self._json("POST", "/v1/admin/jobs", json=config)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job, oldest first."""
        return list(self._request("GET", "/v1/admin/jobs").json())

    def plans(self) -> list[dict[str, Any]]:
        """Every registered plan, oldest first."""
        return list(self._request("GET", "/v1/admin/plans").json())

    def devices(self, limit: int = 100) -> dict[str, Any]:
        """``{"total": N, "devices": [...]}``: the ``limit`` devices seen most recently."""
        return self._json("GET", "/v1/admin/devices", params={"limit": limit})

    def weights_bytes(self, job_id: int, number: int) -> bytes:
        """A version's weights in the binary wire format, as served."""
        return self._request("GET", f"/v1/admin/jobs/{job_id}/versions/{number}/weights").content

    def job(self, job_id: int) -> dict[str, Any]:
        """One job."""
        return self._json("GET", f"/v1/admin/jobs/{job_id}")

    def change_status(self, job_id: int, action: str) -> dict[str, Any]:
        """Pause, resume or stop a job."""
        return self._json("POST", f"/v1/admin/jobs/{job_id}/{action}")

    def versions(self, job_id: int) -> list[dict[str, Any]]:
        """A job's versions."""
        return list(self._request("GET", f"/v1/admin/jobs/{job_id}/versions").json())

    def metrics(self, job_id: int) -> dict[str, Any]:
        """A job's metrics history."""
        return self._json("GET", f"/v1/admin/jobs/{job_id}/metrics")

    def registry(self, job_id: int) -> dict[str, Any]:
        """A job's registry: versions with stage, lineage and evaluation; the stage history."""
        return self._json("GET", f"/v1/admin/jobs/{job_id}/registry")

    def evaluation(self, job_id: int, number: int) -> dict[str, Any]:
        """A version's federated evaluation summary."""
        return self._json("GET", f"/v1/admin/jobs/{job_id}/versions/{number}/evaluation")

    def promote(
        self, job_id: int, number: int, *, to: str | None = None, reason: str = ""
    ) -> dict[str, Any]:
        """Promote a version (to canary or live; None: the next stage)."""
        url = f"/v1/admin/jobs/{job_id}/versions/{number}/promote"
        return self._json("POST", url, json={"to": to, "reason": reason})

    def rollback(self, job_id: int, *, reason: str = "") -> dict[str, Any]:
        """Roll back the job's canary or live version."""
        return self._json("POST", f"/v1/admin/jobs/{job_id}/rollback", json={"reason": reason})

    def weights(self, job_id: int, number: int) -> Any:
        """A version's weights as a float32 vector."""
        return decode_vector(self.weights_bytes(job_id, number))

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        body: dict[str, Any] = self._request(method, url, **kwargs).json()
        return body

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise AdminError(0, f"cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = str(response.json().get("message", response.text))
            except ValueError:
                message = response.text[:300]
            raise AdminError(response.status_code, message)
        return response
