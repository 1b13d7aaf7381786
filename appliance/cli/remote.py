"""The CLI against a remote appliance: ``--url`` and ``--token`` (or ANVIL_URL and ANVIL_TOKEN).

A small synchronous client of the REST API. Problem+json replies become the same
errors the local services raise, so commands print the same one-line reasons and
exit with the same statuses whether they act locally or remotely.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.errors import AnvilError, Conflict, Issue, ValidationError
from appliance.services.jobs import JobInfo, StepInfo


class RemoteError(AnvilError):
    """The remote appliance refused the call (401, 403, 404…)."""


class Remote:
    def __init__(self, url: str, token: str | None, *, ca_cert: Path | None = None, insecure: bool = False,
                 timeout: float = 30.0) -> None:
        if not token:
            raise AnvilError("--url needs a token: --token or ANVIL_TOKEN")
        self.base = url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if self.base.startswith("https://"):
            self._ssl = ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)
            if insecure:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None, json_body: Any = None,
                data: bytes | None = None, content_type: str | None = None, accept: str = "application/json",
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items() if v is not None}
        url = f"{self.base}/api/v1{path}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
        hdrs = {"Authorization": f"Bearer {self._token}", "Accept": accept, **(headers or {})}
        if json_body is not None:
            data, content_type = json.dumps(json_body).encode(), "application/json"
        if content_type:
            hdrs["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl) as resp:
                return resp.status, resp.headers.get_content_type(), resp.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise AnvilError(f"cannot reach {self.base}: {exc.reason}") from None

    def json(self, method: str, path: str, **kw: Any) -> Any:
        _status, _ctype, body = self.request(method, path, **kw)
        return json.loads(body) if body else None

    # -- jobs, shaped like JobService for follow() ---------------------------------
    def get(self, job_id: str) -> JobInfo:
        return job_from_public(self.json("GET", f"/jobs/{urllib.parse.quote(job_id)}"))


def _error(status: int, body: bytes) -> AnvilError:
    try:
        prob = json.loads(body)
    except ValueError:
        prob = {"detail": body.decode(errors="replace")[:200]}
    detail = prob.get("detail") or prob.get("title") or f"HTTP {status}"
    if status == 400 and prob.get("errors"):
        return ValidationError([Issue(e.get("path", ""), e.get("reason", ""), e.get("line"))
                                for e in prob["errors"]])
    if status == 409:
        return Conflict(detail)
    return RemoteError(f"{detail} (HTTP {status})")


def job_from_public(d: dict[str, Any]) -> JobInfo:
    steps = tuple(StepInfo(i, s["name"], s["state"], s.get("attempts", 0), s.get("error"), s.get("result"))
                  for i, s in enumerate(d.get("steps", [])))
    progress = d.get("progress", {})
    finished = d.get("finishedAt")
    return JobInfo(id=d["id"], kind=d["kind"], subject=d["subject"], tenant=d.get("tenant"), state=d["state"],
                   step_index=max(progress.get("step", 1) - 1, 0) if d["state"] in ("pending", "running", "waiting")
                   else len(steps), step_count=progress.get("of", len(steps)),
                   waiting_for=progress.get("waitingFor"), error=d.get("error"),
                   data={"blade": d.get("blade")} if d.get("blade") else {}, steps=steps,
                   created_at=datetime.fromisoformat(d["createdAt"]),
                   finished_at=datetime.fromisoformat(finished) if finished else None,
                   created_by=d.get("createdBy"))
